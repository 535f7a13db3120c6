"""The oras Python SDK (PyPI `oras`, not ours) against the example registry: pushes an artifact,
then a second artifact whose manifest has the first as its OCI 1.1 `subject` (a signature, an
SBOM), pulls both back and compares the files, and asks the referrers API for the subject's
referrers, with and without an `artifactType` filter.

    python3 interop/oras_client.py 127.0.0.1:PORT WORKDIR

Prints one `ok ...` line per check; exits non-zero (with the reason) on the first failure.
"""

import hashlib
import json
import os
import sys
import urllib.parse

import oras.client
import oras.oci

REPO = "library/oras-artifact"
SBOM_TYPE = "application/vnd.example.sbom.v1+json"
SBOM_CONFIG = "application/vnd.example.sbom.config.v1+json"


def fail(message):
    print(f"oras_client: FAIL {message}", file=sys.stderr)
    sys.exit(1)


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main():
    host, work = sys.argv[1], sys.argv[2]
    os.chdir(work)  # oras-py only pushes files below the working directory
    client = oras.client.OrasClient(hostname=host, insecure=True)

    with open("artifact.bin", "wb") as f:
        f.write(os.urandom(3 * 1024 * 1024 + 17))
    with open("notes.txt", "w") as f:
        f.write("pushed by the oras Python SDK\n")
    response = client.push(
        target=f"{host}/{REPO}:v1",
        files=["artifact.bin", "notes.txt:text/plain"],
        manifest_annotations={"org.opencontainers.image.description": "towerscope interop"},
        # Chunked PATCH uploads of 1 MiB with Content-Range: the registry's chunked path.
        do_chunked=True,
        chunk_size=1024 * 1024,
        quiet=True,
    )
    if response.status_code != 201:
        fail(f"push v1: {response.status_code} {response.text}")
    digest = response.headers.get("Docker-Content-Digest", "")
    print(f"ok    oras push {REPO}:v1 (2 files, chunked uploads): {digest}")

    manifest = client.get_manifest(f"{host}/{REPO}:v1")
    head = client.do_request(f"http://{host}/v2/{REPO}/manifests/v1", "HEAD",
                             headers={"Accept": oras.defaults.default_manifest_media_type})
    if head.headers.get("Docker-Content-Digest") != digest:
        fail(f"HEAD manifest digest {head.headers.get('Docker-Content-Digest')} != {digest}")
    size = int(head.headers["Content-Length"])
    if len(manifest["layers"]) != 2:
        fail(f"manifest layers: {manifest}")

    out = os.path.join(work, "pulled")
    files = client.pull(target=f"{host}/{REPO}:v1", outdir=out)
    pulled = {os.path.basename(p): sha256(p) for p in files}
    want = {name: sha256(name) for name in ("artifact.bin", "notes.txt")}
    if pulled != want:
        fail(f"pulled files differ: {pulled} != {want}")
    print("ok    oras pull: both files intact")

    with open("sbom.json", "w") as f:
        json.dump({"spdxVersion": "SPDX-2.3", "name": "oras-artifact"}, f)
    with open("sbom-config.json", "w") as f:
        f.write("{}")
    subject = oras.oci.Subject(mediaType=oras.defaults.default_manifest_media_type, digest=digest, size=size)
    response = client.push(
        target=f"{host}/{REPO}:sbom",
        files=["sbom.json:application/spdx+json"],
        manifest_config=f"sbom-config.json:{SBOM_CONFIG}",
        subject=subject,
        quiet=True,
    )
    if response.status_code != 201:
        fail(f"push referrer: {response.status_code} {response.text}")
    if response.headers.get("OCI-Subject") != digest:
        fail(f"push referrer: OCI-Subject {response.headers.get('OCI-Subject')!r} != {digest}")
    referrer = response.headers.get("Docker-Content-Digest", "")
    print(f"ok    oras push with subject: {referrer}, answered OCI-Subject {digest}")

    url = f"http://{host}/v2/{REPO}/referrers/{digest}"
    index = client.do_request(url, "GET").json()
    found = [(m["digest"], m.get("artifactType")) for m in index.get("manifests", [])]
    if index.get("mediaType") != "application/vnd.oci.image.index.v1+json" or found != [(referrer, SBOM_CONFIG)]:
        fail(f"referrers of {digest}: {index}")
    filtered = client.do_request(url + "?" + urllib.parse.urlencode({"artifactType": SBOM_CONFIG}), "GET")
    if filtered.headers.get("OCI-Filters-Applied") != "artifactType" or len(filtered.json()["manifests"]) != 1:
        fail(f"referrers filtered: {filtered.headers} {filtered.text}")
    other = client.do_request(url + "?artifactType=application/x-none", "GET").json()
    if other["manifests"]:
        fail(f"referrers filtered on an absent type: {other}")
    print("ok    referrers API lists the subject's referrer with its artifactType (filter applied)")

    files = client.pull(target=f"{host}/{REPO}@{referrer}", outdir=os.path.join(work, "sbom"))
    if [os.path.basename(p) for p in files] != ["sbom.json"] or sha256(files[0]) != sha256("sbom.json"):
        fail(f"pull referrer by digest: {files}")
    tags = client.get_tags(f"{host}/{REPO}")
    if sorted(tags) != ["sbom", "v1"]:
        fail(f"tags: {tags}")
    print("ok    oras pull by digest and tags list")


if __name__ == "__main__":
    main()
