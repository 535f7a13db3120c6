//! Manifests: `GET`/`HEAD` by tag or digest (fetched from the upstream in proxy-cache mode),
//! `PUT` by tag or digest, `DELETE` of a manifest by digest or of a tag.

use axum::{
    body::Body,
    extract::Request,
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};

use super::{header_value, internal, oci_error, query_params, upstream_error, OCI_MANIFEST};
use crate::{
    db::{NewManifest, PutManifestError},
    digest::Digest,
    AppState,
};

/// The largest manifest accepted.
const MAX_MANIFEST: usize = 4 << 20;
/// The most tags one push may point at its manifest (`?tag=` parameters; the spec asks for at
/// least 10); more are refused with a 414.
const MAX_TAGS: usize = 100;

async fn read_body(req: Request, limit: usize) -> Result<bytes::Bytes, Response> {
    axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|_| {
            oci_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "SIZE_INVALID",
                "request body too large or interrupted",
            )
        })
}

/// What a pushed manifest says about itself: its `subject` (OCI 1.1 referrers) and its
/// artifact type (`artifactType`, else the config's media type, as the spec defines it for
/// the referrers list).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ManifestMeta {
    pub(crate) media_type: Option<String>,
    pub(crate) subject: Option<String>,
    pub(crate) artifact_type: Option<String>,
}

impl ManifestMeta {
    pub(crate) fn of(content: &[u8]) -> Self {
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(content) else {
            return Self::default();
        };
        let text = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).map(str::to_owned);
        Self {
            media_type: text(value.get("mediaType")),
            subject: text(value.get("subject").and_then(|s| s.get("digest"))),
            artifact_type: text(value.get("artifactType"))
                .or_else(|| text(value.get("config").and_then(|c| c.get("mediaType")))),
        }
    }
}

pub(super) async fn get(state: &AppState, name: &str, reference: &str, head: bool) -> Response {
    let mut found = state.db.manifest(name, reference).await;
    if let (Ok(None), Some(proxy)) = (&found, &state.proxy) {
        let valid = if reference.contains(':') {
            Digest::parse(reference).is_some()
        } else {
            valid_tag(reference)
        };
        if valid {
            match proxy.fetch_manifest(state, name, reference).await {
                Ok(true) => found = state.db.manifest(name, reference).await,
                Ok(false) => {}
                Err(err) => return upstream_error(err),
            }
        }
    }
    match found {
        Ok(Some((digest, media_type, content))) => {
            let mut response = if head {
                Response::new(Body::empty())
            } else {
                Response::new(Body::from(content.clone()))
            };
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, header_value(&media_type));
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(content.len()));
            headers.insert("docker-content-digest", header_value(&digest));
            headers.insert(header::ETAG, header_value(format!("\"{digest}\"")));
            response
        }
        Ok(None) => oci_error(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            format!("manifest unknown: {name}:{reference}"),
        ),
        Err(e) => internal(e),
    }
}

/// A blob a manifest refers to: its config, one of its `layers`, or an entry of `blobs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlobRef {
    pub(crate) digest: String,
    /// A layer that clients may fetch from elsewhere: non-distributable (by media type, OCI's
    /// or Docker's foreign layers) or listing `urls`. It need not be pushed here (the spec
    /// says registries may not require it); when it is, it is kept like any other.
    pub(crate) external: bool,
}

/// Whether a layer descriptor is one clients may fetch from elsewhere (see [`BlobRef`]).
fn external_layer(layer: &serde_json::Value) -> bool {
    let media_type = layer
        .get("mediaType")
        .and_then(|t| t.as_str())
        .unwrap_or("");
    let urls = layer.get("urls").and_then(|u| u.as_array());
    media_type.starts_with("application/vnd.oci.image.layer.nondistributable.")
        || media_type == "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
        || urls.is_some_and(|urls| !urls.is_empty())
}

/// The blobs an image manifest refers to (config and layers); empty for an index, whose
/// entries are manifests. `None` if the JSON is not a manifest.
pub(crate) fn referenced_blobs(content: &[u8]) -> Option<Vec<BlobRef>> {
    let value: serde_json::Value = serde_json::from_slice(content).ok()?;
    let object = value.as_object()?;
    let digest =
        |descriptor: &serde_json::Value| Some(descriptor.get("digest")?.as_str()?.to_owned());
    let mut blobs = Vec::new();
    if let Some(config) = object.get("config") {
        let digest = digest(config)?;
        blobs.push(BlobRef {
            digest,
            external: false,
        });
    }
    for key in ["layers", "blobs"] {
        if let Some(layers) = object.get(key) {
            for layer in layers.as_array()? {
                let digest = digest(layer)?;
                let external = key == "layers" && external_layer(layer);
                blobs.push(BlobRef { digest, external });
            }
        }
    }
    Some(blobs)
}

fn valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(b))
}

/// A refused push: the status and OCI error of its answer.
#[derive(Debug)]
struct Refused {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Refused {
    fn bad_request(code: &'static str, message: String) -> Self {
        let status = StatusCode::BAD_REQUEST;
        Self {
            status,
            code,
            message,
        }
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        oci_error(self.status, self.code, self.message)
    }
}

/// The digest a manifest pushed to `reference` is stored under, and its tag: pushed by digest,
/// the content must have that digest, in its algorithm (sha256 or sha512); pushed by tag, it
/// gets the canonical (sha256) digest.
fn stored_as<'r>(reference: &'r str, body: &[u8]) -> Result<(Digest, Option<&'r str>), Refused> {
    if !reference.contains(':') {
        return if valid_tag(reference) {
            Ok((Digest::of(body), Some(reference)))
        } else {
            Err(Refused::bad_request(
                "TAG_INVALID",
                "invalid tag".to_owned(),
            ))
        };
    }
    let Some(expected) = Digest::parse(reference) else {
        let message =
            format!("invalid or unsupported digest {reference} (sha256 and sha512 are supported)");
        return Err(Refused::bad_request("DIGEST_INVALID", message));
    };
    let digest = expected.algorithm().digest(body);
    if digest != expected {
        let message = format!("manifest digest is {digest}, not {reference}");
        return Err(Refused::bad_request("DIGEST_INVALID", message));
    }
    Ok((digest, None))
}

/// The tags a push points at its manifest: the reference's, when pushed by tag, and those of
/// its `?tag=` parameters (OCI 1.1, meant for a push by digest), each once, in order.
fn tags_of(tag: Option<&str>, query: Option<&str>) -> Result<Vec<String>, Refused> {
    let mut tags: Vec<String> = tag.map(str::to_owned).into_iter().collect();
    for param in query_params(query, "tag") {
        if !valid_tag(&param) {
            let message = format!("invalid tag parameter {param:?}");
            return Err(Refused::bad_request("TAG_INVALID", message));
        }
        if tags.contains(&param) {
            continue;
        }
        // Refused as soon as there are too many: the lookups above stay short.
        if tags.len() == MAX_TAGS {
            return Err(Refused {
                status: StatusCode::URI_TOO_LONG,
                code: "TAG_INVALID",
                message: format!("at most {MAX_TAGS} tags per push"),
            });
        }
        tags.push(param);
    }
    Ok(tags)
}

pub(super) async fn put(state: &AppState, name: &str, reference: &str, req: Request) -> Response {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let query = req.uri().query().map(str::to_owned);
    let body = match read_body(req, MAX_MANIFEST).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let (digest, tag) = match stored_as(reference, &body) {
        Ok(stored) => stored,
        Err(refused) => return refused.into_response(),
    };
    let tags = match tags_of(tag, query.as_deref()) {
        Ok(tags) => tags,
        Err(refused) => return refused.into_response(),
    };
    let Some(blobs) = referenced_blobs(&body) else {
        return oci_error(
            StatusCode::BAD_REQUEST,
            "MANIFEST_INVALID",
            "manifest is not valid JSON",
        );
    };
    let meta = ManifestMeta::of(&body);
    let media_type = content_type
        .or_else(|| meta.media_type.clone())
        .unwrap_or_else(|| OCI_MANIFEST.to_owned());
    // Every blob but the external layers must be stored here.
    let required: Vec<&str> = blobs
        .iter()
        .filter(|blob| !blob.external)
        .map(|blob| blob.digest.as_str())
        .collect();
    let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
    let stored = NewManifest {
        repository: name,
        digest: digest.as_str(),
        media_type: &media_type,
        content: &body,
        tags: &tags,
        subject: meta.subject.as_deref(),
        artifact_type: meta.artifact_type.as_deref(),
        blobs: &required,
    };
    match state.db.put_manifest(&stored).await {
        Ok(()) => created(name, &digest, &tags, meta.subject.as_deref()),
        Err(PutManifestError::BlobUnknown(blob)) => oci_error(
            StatusCode::BAD_REQUEST,
            "MANIFEST_BLOB_UNKNOWN",
            format!("blob unknown to registry: {blob}"),
        ),
        Err(PutManifestError::Db(e)) => internal(e),
    }
}

/// The answer to a stored manifest: its location and digest, the tags now pointing at it
/// (`OCI-Tag`, one list) and its subject (`OCI-Subject`).
fn created(name: &str, digest: &Digest, tags: &[&str], subject: Option<&str>) -> Response {
    let mut response = StatusCode::CREATED.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::LOCATION,
        header_value(format!("/v2/{name}/manifests/{digest}")),
    );
    headers.insert("docker-content-digest", header_value(digest.as_str()));
    if !tags.is_empty() {
        headers.insert("oci-tag", header_value(tags.join(", ")));
    }
    // The subject is indexed for the referrers API (OCI 1.1), whether or not it is stored.
    if let Some(subject) = subject {
        headers.insert("oci-subject", header_value(subject));
    }
    response
}

pub(super) async fn delete(state: &AppState, name: &str, reference: &str) -> Response {
    let by_digest = reference.contains(':');
    match state.db.delete_manifest(name, reference, by_digest).await {
        Ok(true) => StatusCode::ACCEPTED.into_response(),
        Ok(false) => oci_error(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            "manifest unknown",
        ),
        Err(e) => internal(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{digest::Algorithm, registry::test_support::TestRegistry};
    use axum::http::Method;

    /// An image manifest with `config` and `layers` (descriptors as JSON).
    fn image(config: &Digest, layers: &[serde_json::Value]) -> Vec<u8> {
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config.as_str(),
                "size": 2,
            },
            "layers": layers,
        });
        serde_json::to_vec(&manifest).unwrap()
    }

    #[tokio::test]
    async fn non_distributable_layers_need_not_be_pushed_other_blobs_must() {
        let registry = TestRegistry::new().await;
        let config = Digest::of(b"{}");
        registry.push_blob("r/nd", &config, &b"{}"[..]).await;
        let absent = |seed: &[u8]| Digest::of(seed).to_string();
        let nondistributable = serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            "digest": absent(b"nd"),
            "size": 123456,
            "urls": ["https://store.example.com/blobs/nd"],
        });
        let foreign = serde_json::json!({
            "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            "digest": absent(b"foreign"),
            "size": 1,
        });
        let with_urls = serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": absent(b"urls"),
            "size": 1,
            "urls": ["https://store.example.com/blobs/urls"],
        });
        let manifest = image(&config, &[nondistributable, foreign, with_urls]);
        let put = registry
            .send(Method::PUT, "/v2/r/nd/manifests/v1", manifest.clone())
            .await;
        assert_eq!(put.status, StatusCode::CREATED, "{put:?}");
        let got = registry
            .send(Method::GET, "/v2/r/nd/manifests/v1", ())
            .await;
        assert_eq!(&got.body[..], &manifest[..]);

        // An ordinary layer (or a config) that was never pushed is refused, and nothing of the
        // push is kept: not the tag, not even the new repository.
        let missing = serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": absent(b"missing"),
            "size": 1,
        });
        let unknown_config = Digest::of(b"no config");
        for manifest in [image(&config, &[missing]), image(&unknown_config, &[])] {
            let put = registry
                .send(Method::PUT, "/v2/r/other/manifests/v1", manifest)
                .await;
            assert_eq!(put.status, StatusCode::BAD_REQUEST);
            assert_eq!(put.error_code().as_deref(), Some("MANIFEST_BLOB_UNKNOWN"));
        }
        let tags = registry
            .send(Method::GET, "/v2/r/other/tags/list", ())
            .await;
        assert_eq!(tags.status, StatusCode::NOT_FOUND);
        assert_eq!(tags.error_code().as_deref(), Some("NAME_UNKNOWN"));
    }

    #[tokio::test]
    async fn tag_parameters_of_a_push_by_digest_point_each_tag_at_it() {
        let registry = TestRegistry::new().await;
        let config = Algorithm::Sha512.digest(b"{}");
        registry.push_blob("r", &config, &b"{}"[..]).await;
        let manifest = image(&config, &[]);
        let digest = Algorithm::Sha512.digest(&manifest);
        let uri = format!("/v2/r/manifests/{digest}?tag=1.2.3&tag=latest&tag=1.2.3");
        let put = registry.send(Method::PUT, &uri, manifest.clone()).await;
        assert_eq!(put.status, StatusCode::CREATED, "{put:?}");
        assert_eq!(put.list("oci-tag"), ["1.2.3", "latest"]);
        for tag in ["1.2.3", "latest"] {
            let uri = format!("/v2/r/manifests/{tag}");
            let got = registry.send(Method::HEAD, &uri, ()).await;
            assert_eq!(got.status, StatusCode::OK, "{tag}");
            assert_eq!(got.header("docker-content-digest"), Some(digest.as_str()));
        }
        let tags = registry.send(Method::GET, "/v2/r/tags/list", ()).await;
        let tags: serde_json::Value = serde_json::from_slice(&tags.body).unwrap();
        assert_eq!(tags["tags"], serde_json::json!(["1.2.3", "latest"]));

        // One invalid tag refuses the push: nothing of it is stored.
        let uri = format!("/v2/r/manifests/{digest}?tag=ok&tag=-bad");
        let refused = registry.send(Method::PUT, &uri, manifest.clone()).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST);
        assert_eq!(refused.error_code().as_deref(), Some("TAG_INVALID"));
        let ok = registry.send(Method::HEAD, "/v2/r/manifests/ok", ()).await;
        assert_eq!(ok.status, StatusCode::NOT_FOUND);
        let many: Vec<String> = (0..=MAX_TAGS).map(|i| format!("tag={i}")).collect();
        let uri = format!("/v2/r/manifests/{digest}?{}", many.join("&"));
        let refused = registry.send(Method::PUT, &uri, manifest).await;
        assert_eq!(refused.status, StatusCode::URI_TOO_LONG);
    }

    #[tokio::test]
    async fn a_sha512_image_is_pushed_and_pulled_by_its_digests() {
        let registry = TestRegistry::new().await;
        let config = Algorithm::Sha512.digest(b"{}");
        registry.push_blob("r/sha512", &config, &b"{}"[..]).await;
        let blob = registry
            .send(Method::GET, &format!("/v2/r/sha512/blobs/{config}"), ())
            .await;
        assert_eq!(blob.status, StatusCode::OK);
        assert_eq!(blob.header("docker-content-digest"), Some(config.as_str()));
        assert_eq!(&blob.body[..], b"{}");

        let manifest = image(&config, &[]);
        let digest = Algorithm::Sha512.digest(&manifest);
        let uri = format!("/v2/r/sha512/manifests/{digest}");
        let put = registry.send(Method::PUT, &uri, manifest.clone()).await;
        assert_eq!(put.status, StatusCode::CREATED, "{put:?}");
        assert_eq!(put.header("docker-content-digest"), Some(digest.as_str()));
        assert_eq!(put.header("location"), Some(uri.as_str()));
        let got = registry.send(Method::GET, &uri, ()).await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.header("docker-content-digest"), Some(digest.as_str()));
        assert_eq!(&got.body[..], &manifest[..]);

        // The same bytes pushed under their sha256 digest are another manifest of the
        // repository; a sha512 digest of other bytes, or an unsupported one, is refused.
        let sha256 = format!("/v2/r/sha512/manifests/{}", Digest::of(&manifest));
        let put = registry.send(Method::PUT, &sha256, manifest.clone()).await;
        assert_eq!(put.status, StatusCode::CREATED, "{put:?}");
        let other = Algorithm::Sha512.digest(b"other");
        for wrong in [other.as_str(), "sha512:abc", "sha384:abc"] {
            let uri = format!("/v2/r/sha512/manifests/{wrong}");
            let put = registry.send(Method::PUT, &uri, manifest.clone()).await;
            assert_eq!(put.status, StatusCode::BAD_REQUEST, "{wrong}");
            assert_eq!(
                put.error_code().as_deref(),
                Some("DIGEST_INVALID"),
                "{wrong}"
            );
        }
    }

    #[test]
    fn manifest_meta_reads_subject_and_artifact_type() {
        let with_type = br#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/x-sig","config":{"mediaType":"application/vnd.oci.empty.v1+json"},"subject":{"digest":"sha256:s"}}"#;
        assert_eq!(
            ManifestMeta::of(with_type),
            ManifestMeta {
                media_type: Some(OCI_MANIFEST.to_owned()),
                subject: Some("sha256:s".to_owned()),
                artifact_type: Some("application/x-sig".to_owned()),
            }
        );
        let from_config = br#"{"config":{"mediaType":"application/x-sbom"}}"#;
        assert_eq!(
            ManifestMeta::of(from_config).artifact_type.as_deref(),
            Some("application/x-sbom")
        );
        assert_eq!(ManifestMeta::of(b"not json"), ManifestMeta::default());
    }

    #[test]
    fn referenced_blobs_reads_config_and_layers() {
        let manifest = br#"{"schemaVersion":2,"config":{"digest":"sha256:c"},"layers":[{"digest":"sha256:l1"},{"digest":"sha256:l2"}]}"#;
        let digests: Vec<String> = referenced_blobs(manifest)
            .unwrap()
            .into_iter()
            .map(|blob| blob.digest)
            .collect();
        assert_eq!(digests, ["sha256:c", "sha256:l1", "sha256:l2"]);
        let external = br#"{"config":{"digest":"sha256:c","urls":["https://x"]},"layers":[{"mediaType":"application/vnd.oci.image.layer.nondistributable.v1.tar","digest":"sha256:n"},{"digest":"sha256:u","urls":["https://x"]},{"digest":"sha256:e","urls":[]}],"blobs":[{"digest":"sha256:b","urls":["https://x"]}]}"#;
        let externals: Vec<bool> = referenced_blobs(external)
            .unwrap()
            .into_iter()
            .map(|blob| blob.external)
            .collect();
        // Only layers can be external: a config or an artifact's blob is always required.
        assert_eq!(externals, [false, true, true, false, false]);
        let index = br#"{"schemaVersion":2,"manifests":[{"digest":"sha256:m"}]}"#;
        assert!(referenced_blobs(index).unwrap().is_empty());
        assert!(referenced_blobs(b"not json").is_none());
    }
}
