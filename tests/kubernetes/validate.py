"""Validates Kubernetes objects against the API's JSON schemas, offline (kubernetes-validate,
which bundles them), strictly (an unknown field is an error), for each version given.

Usage: validate.py OBJECTS.json VERSION... where OBJECTS.json holds a list of objects.
Prints "all checks passed" when every object is valid for every version.
"""

import json
import sys

import kubernetes_validate


def main() -> int:
    path, versions = sys.argv[1], sys.argv[2:]
    with open(path) as f:
        objects = json.load(f)
    assert objects, "no objects to validate"
    # The validator itself must refuse what the API server would: else a pass means nothing.
    bogus = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
             "spec": {"containers": [{"name": "c", "image": "i", "bogus": 1}]}}
    for version in versions:
        try:
            kubernetes_validate.validate(bogus, version, strict=True)
            print(f"the validator took an unknown field for {version}")
            return 1
        except kubernetes_validate.ValidationError:
            pass
    failed = 0
    for obj in objects:
        name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        for version in versions:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as e:
                failed += 1
                print(f"{name} is not valid for Kubernetes {version}: {e}")
    if failed:
        return 1
    print(f"{len(objects)} objects valid for {', '.join(versions)}: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
