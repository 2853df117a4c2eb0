"""Creating signatures and editing their documentation (behaviour changes through versions)."""

from django.db import IntegrityError, transaction

from registry.exceptions import InvalidSpec, SignatureAlreadyExists
from registry.models import Signature
from registry.services._common import MaybeUser, user_or_none
from registry.specs import name_problem, tags_normalize, text_problem


@transaction.atomic
def signature_create(
    *,
    name: str,
    description: str = "",
    tags: list[str] | None = None,
    author: MaybeUser = None,
) -> Signature:
    errors: dict[str, list[str]] = {}
    problem = name_problem(name)
    if problem:
        errors["name"] = [problem]
    problem = text_problem(description)
    if problem:
        errors["description"] = [f"The description {problem}"]
    try:
        tags = tags_normalize(tags)
    except InvalidSpec as exc:
        errors |= exc.errors
    if errors:
        raise InvalidSpec(errors)
    if Signature.objects.filter(name=name).exists():
        raise SignatureAlreadyExists(f"A signature named '{name}' exists already.")
    try:
        with transaction.atomic():
            return Signature.objects.create(
                name=name,
                description=description.strip(),
                tags=tags,
                created_by=user_or_none(author),
            )
    except IntegrityError:
        # Another request created the same name between the check and the insert.
        raise SignatureAlreadyExists(f"A signature named '{name}' exists already.") from None


@transaction.atomic
def signature_update(
    *, signature: Signature, description: str | None = None, tags: list[str] | None = None
) -> Signature:
    """Change a signature's documentation. Behaviour only changes through new versions."""
    update_fields = ["updated_at"]
    if description is not None:
        problem = text_problem(description)
        if problem:
            raise InvalidSpec({"description": [f"The description {problem}"]})
        signature.description = description.strip()
        update_fields.append("description")
    if tags is not None:
        signature.tags = tags_normalize(tags)
        update_fields.append("tags")
    signature.save(update_fields=update_fields)
    return signature
