# Sourced by start.sh and test.sh: installs Debian's OpenBLAS (pthread build) for MLX's CPU
# backend when running as root on Debian/Ubuntu and it is missing. Without it everything still
# works, only slower: providers.mlx.blas falls back to the BLAS bundled with the mlx wheel.
ensure_fast_blas() {
  if [ "$(uname -s)" != Linux ] || ls /usr/lib/*-linux-gnu/openblas-pthread/libopenblas.so.0 >/dev/null 2>&1; then
    return 0
  fi
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "==> Fast BLAS missing (install libopenblas0-pthread for faster local inference)" >&2
    return 0
  fi
  echo "==> Installing Debian's OpenBLAS (libopenblas0-pthread) for fast CPU inference"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas0-pthread >/dev/null
}
