#!/bin/sh
# Used by the images' build stages: install.sh VENV LOCK [PIP ARGUMENTS...]
# Creates the virtual environment VENV and installs the lock LOCK into it, every package checked against its hash:
# from /wheels alone when the build context brought a wheelhouse (no network needed), else from the package index.
# `install.sh --finish VENV` then takes the installer itself (pip, setuptools) out of a venv an image ships.
set -eu
if [ "$1" = --finish ]; then
  "$2/bin/python" -m pip uninstall --quiet --disable-pip-version-check --yes pip setuptools
  exit 0
fi
venv=$1
lock=$2
shift 2
python -m venv "$venv"
if ls /wheels/*.whl >/dev/null 2>&1; then
  set -- --no-index --find-links /wheels "$@"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir --require-hashes -r "$lock" "$@"
