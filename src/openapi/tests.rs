//! Unit tests of the OpenAPI resolver.

use std::borrow::Cow;

use super::*;

const PETS: &str = r#"
swagger: "2.0"
basePath: /api/v2.0
paths:
  /users:
    get:
      operationId: listUsers
    post:
      operationId: createUser
    parameters:
      - name: X-Request-Id
        in: header
        type: string
  /users/current:
    get:
      operationId: getCurrentUserInfo
  /users/current/permissions:
    get:
      operationId: getCurrentUserPermissions
  /users/{user_id}:
    get:
      operationId: getUser
    summary: a user
  /users/{user_id}/sysadmin:
    put:
      operationId: setUserSysAdmin
  /projects:
    head:
      operationId: headProject
    get:
      operationId: listProjects
  /projects/{project_name_or_id}:
    get:
      operationId: getProject
  /projects/{project_name}/logs:
    get:
      operationId: getLogs
  /projects/{project_name_or_id}/metadatas/:
    get:
      operationId: listProjectMetadatas
  /undocumented:
    get:
      summary: no operationId
  x-extension:
    get:
      operationId: notAnOperation
"#;

fn pets() -> OpenApiResolver {
    OpenApiResolver::from_yaml_str(PETS).unwrap()
}

fn get<'a>(resolver: &'a OpenApiResolver, path: &str) -> Option<&'a str> {
    resolver
        .resolve_path(&Method::GET, path)
        .map(OperationId::as_str)
}

fn openapi3(servers: &str) -> OpenApiResolver {
    let yaml = format!(
        "openapi: 3.0.3\n{servers}\npaths:\n  /users:\n    get:\n      operationId: listUsers\n"
    );
    OpenApiResolver::from_yaml_str(&yaml).unwrap()
}

#[test]
fn registers_operations_with_an_operation_id() {
    let resolver = pets();
    assert_eq!(resolver.len(), 11);
    assert!(!resolver.is_empty());
    assert_eq!(resolver.duplicates(), 0);
    assert_eq!(resolver.base_paths().collect::<Vec<_>>(), ["/api/v2.0"]);
    let first = resolver.operations().next().unwrap();
    assert_eq!(
        first,
        (&Method::GET, "/users", &OperationId::from("listUsers"))
    );
    assert!(resolver
        .operations()
        .all(|(_, template, _)| template.starts_with('/')));
    assert_eq!(get(&resolver, "/api/v2.0/undocumented"), None);
    assert_eq!(get(&resolver, "/api/v2.0/x-extension"), None);
    let debug = format!("{resolver:?}");
    assert!(debug.contains("operations: 11"), "{debug}");
}

#[test]
fn resolves_through_the_operation_resolver_trait() {
    let resolver = pets();
    let request = http::Request::post("http://harbor.example/api/v2.0/users?page=2")
        .body(())
        .unwrap();
    let id = resolver.resolve(&RequestRef::from(&request)).unwrap();
    assert_eq!(id.as_str(), "createUser");
}

#[test]
fn literal_segments_beat_parameters() {
    let resolver = pets();
    assert_eq!(
        get(&resolver, "/api/v2.0/users/current"),
        Some("getCurrentUserInfo")
    );
    assert_eq!(get(&resolver, "/api/v2.0/users/42"), Some("getUser"));
    assert_eq!(get(&resolver, "/api/v2.0/users/currentx"), Some("getUser"));
    assert_eq!(
        get(&resolver, "/api/v2.0/users/current/permissions"),
        Some("getCurrentUserPermissions")
    );
    // `current` as a user id: the router backtracks from the literal to the parameter.
    let put = resolver.resolve_path(&Method::PUT, "/api/v2.0/users/current/sysadmin");
    assert_eq!(put.map(OperationId::as_str), Some("setUserSysAdmin"));
}

#[test]
fn parameters_differing_only_in_name_coexist() {
    let resolver = pets();
    assert_eq!(
        get(&resolver, "/api/v2.0/projects/library"),
        Some("getProject")
    );
    assert_eq!(
        get(&resolver, "/api/v2.0/projects/library/logs"),
        Some("getLogs")
    );
    assert_eq!(
        get(&resolver, "/api/v2.0/projects/7/metadatas"),
        Some("listProjectMetadatas")
    );
}

#[test]
fn same_template_twice_keeps_the_first() {
    let resolver = OpenApiResolver::from_yaml_str(
        r#"
swagger: "2.0"
paths:
  /a/{x}:
    get: {operationId: first}
    put: {operationId: putA}
  /a/{y}:
    get: {operationId: second}
  /b:
    get: {operationId: b}
  /b/:
    get: {operationId: bSlash}
"#,
    )
    .unwrap();
    assert_eq!(resolver.len(), 3);
    assert_eq!(resolver.duplicates(), 2);
    assert_eq!(get(&resolver, "/a/1"), Some("first"));
    assert_eq!(get(&resolver, "/b/"), Some("b"));
}

#[test]
fn one_trailing_slash_is_ignored() {
    let resolver = pets();
    assert_eq!(get(&resolver, "/api/v2.0/users/"), Some("listUsers"));
    assert_eq!(get(&resolver, "/api/v2.0/users//"), None);
    assert_eq!(get(&resolver, "/api/v2.0/users/42/"), Some("getUser"));
    // The template itself ends with a slash.
    assert_eq!(
        get(&resolver, "/api/v2.0/projects/7/metadatas/"),
        Some("listProjectMetadatas")
    );
    let root = OpenApiResolver::from_yaml_str(
            "swagger: '2.0'\npaths:\n  /:\n    get: {operationId: root}\n  /a:\n    get: {operationId: a}\n",
        )
        .unwrap();
    assert_eq!(get(&root, "/"), Some("root"));
    // `//` less one trailing slash.
    assert_eq!(get(&root, "//"), Some("root"));
    assert_eq!(get(&root, "///"), None);
    assert_eq!(get(&root, "/a/"), Some("a"));
    let with_base = root.with_base_path("/base/");
    assert_eq!(get(&with_base, "/base"), Some("root"));
    assert_eq!(get(&with_base, "/base/"), Some("root"));
    assert_eq!(get(&with_base, "/base/a/"), Some("a"));
}

#[test]
fn base_path_must_match_at_a_segment_boundary() {
    let resolver = pets();
    assert_eq!(get(&resolver, "/users"), None);
    assert_eq!(get(&resolver, "/api/v2.0x/users"), None);
    assert_eq!(get(&resolver, "/api/v2.01/users"), None);
    assert_eq!(get(&resolver, "/api/v2.0"), None);
    assert_eq!(get(&resolver, "/api/users"), None);
    assert_eq!(get(&resolver, "/API/v2.0/users"), None);
}

#[test]
fn with_base_path_overrides_the_document() {
    let resolver = pets().with_base_path("api");
    assert_eq!(resolver.base_paths().collect::<Vec<_>>(), ["/api"]);
    assert_eq!(get(&resolver, "/api/users"), Some("listUsers"));
    assert_eq!(get(&resolver, "/api/v2.0/users"), None);
    let root = pets().with_base_path("/");
    assert_eq!(root.base_paths().collect::<Vec<_>>(), ["/"]);
    assert_eq!(get(&root, "/users"), Some("listUsers"));
    let both = pets().with_base_paths(["/v1", "", "/v1/"]);
    assert_eq!(both.base_paths().collect::<Vec<_>>(), ["/v1", "/"]);
    assert_eq!(get(&both, "/v1/users"), Some("listUsers"));
    assert_eq!(get(&both, "/users"), Some("listUsers"));
    let none = pets().with_base_paths(Vec::<String>::new());
    assert_eq!(none.base_paths().collect::<Vec<_>>(), ["/"]);
}

#[test]
fn swagger_without_base_path_is_rooted() {
    let resolver = OpenApiResolver::from_yaml_str(
        "swagger: 2.0\npaths:\n  /ping:\n    get:\n      operationId: getPing\n",
    )
    .unwrap();
    assert_eq!(resolver.base_paths().collect::<Vec<_>>(), ["/"]);
    assert_eq!(get(&resolver, "/ping"), Some("getPing"));
}

#[test]
fn openapi3_server_urls_give_base_paths() {
    let absolute = openapi3("servers:\n  - url: https://api.example.com:8443/v1/?x=1#top");
    assert_eq!(absolute.base_paths().collect::<Vec<_>>(), ["/v1"]);
    assert_eq!(get(&absolute, "/v1/users"), Some("listUsers"));
    assert_eq!(get(&absolute, "/users"), None);

    let host_only = openapi3("servers:\n  - url: http://api.example.com");
    assert_eq!(host_only.base_paths().collect::<Vec<_>>(), ["/"]);
    let network_path = openapi3("servers:\n  - url: //cdn.example.com/v5");
    assert_eq!(network_path.base_paths().collect::<Vec<_>>(), ["/v5"]);

    let relative = openapi3("servers:\n  - url: /v2\n  - url: v3\n  - url: ./v4\n  - url: .");
    assert_eq!(
        relative.base_paths().collect::<Vec<_>>(),
        ["/v2", "/v3", "/v4", "/"]
    );
    for path in ["/v2/users", "/v3/users/", "/v4/users", "/users"] {
        assert_eq!(get(&relative, path), Some("listUsers"), "{path}");
    }

    let none = openapi3("");
    assert_eq!(none.base_paths().collect::<Vec<_>>(), ["/"]);
    let empty = openapi3("servers: []");
    assert_eq!(empty.base_paths().collect::<Vec<_>>(), ["/"]);
}

#[test]
fn openapi3_server_variables_use_their_defaults() {
    let resolver = openapi3(
        r#"servers:
  - url: "{scheme}://{host}:{port}/{base}/v{major}"
    variables:
      scheme: {default: https, enum: [https, http]}
      host: {default: api.example.com}
      port: {default: 8443}
      base: {default: registry}
      major: {default: 2}
  - url: "https://{undefinedHost}/plain""#,
    );
    assert_eq!(
        resolver.base_paths().collect::<Vec<_>>(),
        ["/registry/v2", "/plain"]
    );
    assert_eq!(get(&resolver, "/registry/v2/users"), Some("listUsers"));
    assert_eq!(get(&resolver, "/plain/users"), Some("listUsers"));

    let yaml = "openapi: 3.1.0\nservers:\n  - url: /api/{version}\npaths: {}\n";
    let err = OpenApiResolver::from_yaml_str(yaml).unwrap_err();
    assert!(
        matches!(&err, OpenApiError::InvalidServerUrl { url, .. } if url == "/api/{version}"),
        "{err}"
    );
    assert!(err.to_string().contains("/api/{version}"), "{err}");
}

#[test]
fn escaped_unreserved_characters_are_decoded() {
    let resolver = pets();
    assert_eq!(
        get(&resolver, "/api/v2.0/users/%63urrent"),
        Some("getCurrentUserInfo")
    );
    assert_eq!(
        get(&resolver, "/api/v2.0/%75%73%65%72%73"),
        Some("listUsers")
    );
    assert_eq!(get(&resolver, "/api/v2%2e0/users"), Some("listUsers"));
    assert_eq!(get(&resolver, "/api/v2.0/users/%7E42"), Some("getUser"));
    // Reserved characters stay escaped, inside one segment.
    assert_eq!(get(&resolver, "/api/v2.0/users/a%2Fb"), Some("getUser"));
    assert_eq!(get(&resolver, "/api/v2.0/users/a%252Fb"), Some("getUser"));
    assert_eq!(
        get(&resolver, "/api/v2.0/users/a%2Fcurrent"),
        Some("getUser")
    );
    assert_eq!(get(&resolver, "/api/v2.0/users%2Fcurrent"), None);
}

#[test]
fn percent_normalization_borrows_unless_it_decodes() {
    assert!(matches!(normalize_percent("/users/42"), Cow::Borrowed(_)));
    assert!(matches!(
        normalize_percent("/a%2Fb%25%zz%"),
        Cow::Borrowed(_)
    ));
    assert_eq!(
        normalize_percent("/%41%2f%7e%7E%2D%5F%2e%30"),
        "/A%2f~~-_.0"
    );
    assert_eq!(normalize_percent("%4"), "%4");
    assert_eq!(normalize_percent("%%41"), "%A");
    assert_eq!(normalize_percent("/é%41é"), "/éAé");
}

#[test]
fn head_falls_back_to_get() {
    let resolver = pets();
    let head = |path| {
        resolver
            .resolve_path(&Method::HEAD, path)
            .map(OperationId::as_str)
    };
    assert_eq!(head("/api/v2.0/projects"), Some("headProject"));
    assert_eq!(head("/api/v2.0/projects/library"), Some("getProject"));
    assert_eq!(head("/api/v2.0/users/current"), Some("getCurrentUserInfo"));
    // Only HEAD falls back.
    let options = resolver.resolve_path(&Method::OPTIONS, "/api/v2.0/users");
    assert_eq!(options, None);
}

#[test]
fn unknown_methods_do_not_resolve() {
    let resolver = pets();
    for method in ["PROPFIND", "CONNECT", "get", "PURGE"] {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        assert_eq!(resolver.resolve_path(&method, "/api/v2.0/users"), None);
    }
    assert_eq!(
        resolver.resolve_path(&Method::DELETE, "/api/v2.0/users"),
        None
    );
}

#[test]
fn hostile_paths_do_not_panic() {
    let resolver = pets();
    let long_segment = format!("/api/v2.0/users/{}", "a".repeat(100_000));
    let long_segments = format!("/api/v2.0{}", "/users".repeat(20_000));
    let long_escapes = format!("/api/v2.0/users/{}", "%41%2F%zz".repeat(12_000));
    let cases = [
        ("", None),
        ("*", None),
        ("users", None),
        ("/", None),
        ("//", None),
        ("%", None),
        ("/%", None),
        ("/api/v2.0/%", None),
        ("/api/v2.0/users/%", Some("getUser")),
        ("/api/v2.0/users/%zz", Some("getUser")),
        ("/api/v2.0/users/%2", Some("getUser")),
        ("/api/v2.0/users/%FF%FE%C3%28", Some("getUser")),
        ("/api/v2.0/users/%00", Some("getUser")),
        ("/api/v2.0/users/..", Some("getUser")),
        ("/api/v2.0/users/../..", None),
        ("/api/v2.0/../v2.0/users", None),
        ("/api/v2.0//users", None),
        ("/api/v2.0/users//sysadmin", None),
        ("/api/v2.0/projects//logs", None),
        ("/api/v2.0/users//", None),
        ("/api/v2.0/users/{user_id}", Some("getUser")),
        ("/api/v2.0/users/{p1}", Some("getUser")),
        ("/api/v2.0/users/é", Some("getUser")),
        ("/api/v2.0/users/\u{0}", Some("getUser")),
        (long_segment.as_str(), Some("getUser")),
        (long_segments.as_str(), None),
        (long_escapes.as_str(), Some("getUser")),
    ];
    for (path, expected) in cases {
        assert_eq!(get(&resolver, path), expected, "{:.60}", path);
        let _ = resolver.resolve_path(&Method::HEAD, path);
    }
}

#[test]
fn template_literals_match_their_encoded_form() {
    let resolver = OpenApiResolver::from_yaml_str(
        r#"
swagger: "2.0"
paths:
  /café/{id}:
    get: {operationId: cafe}
  /a b/%7Euser:
    get: {operationId: spaced}
  /odd}brace:
    get: {operationId: brace}
  /v{version}/items:
    get: {operationId: versioned}
"#,
    )
    .unwrap();
    assert_eq!(get(&resolver, "/caf%C3%A9/1"), Some("cafe"));
    assert_eq!(get(&resolver, "/a%20b/~user"), Some("spaced"));
    assert_eq!(get(&resolver, "/a%20b/%7euser"), Some("spaced"));
    assert_eq!(get(&resolver, "/odd}brace"), Some("brace"));
    assert_eq!(get(&resolver, "/v2/items"), Some("versioned"));
    assert_eq!(get(&resolver, "/x2/items"), None);
    assert_eq!(get(&resolver, "/v/items"), None);
    assert_eq!(get(&resolver, "/caf%C3%A9//"), None);
}

#[test]
fn reads_json_and_non_string_scalars() {
    let json = r#"{"openapi": "3.0.0", "servers": [{"url": "/v1"}],
            "paths": {"/pets/{id}": {"get": {"operationId": "getPet",
            "responses": {"200": {"description": "ok"}}}}}}"#;
    let resolver = OpenApiResolver::from_json_str(json).unwrap();
    assert_eq!(get(&resolver, "/v1/pets/1"), Some("getPet"));
    let value: serde_json::Value = serde_json::from_str(json).unwrap();
    let resolver = OpenApiResolver::from_value(value).unwrap();
    assert_eq!(get(&resolver, "/v1/pets/1"), Some("getPet"));
    // YAML: numbers where strings are expected, integer keys, anchors and aliases.
    let yaml = r#"
openapi: 3.1
paths:
  /pets:
    get: &list
      operationId: 123
      responses:
        200: {description: ok}
        default: {description: error}
    head: *list
"#;
    let resolver = OpenApiResolver::from_yaml_str(yaml).unwrap();
    assert_eq!(get(&resolver, "/pets"), Some("123"));
    assert_eq!(resolver.len(), 2);
}

#[test]
fn reads_files_by_extension() {
    let dir = std::env::temp_dir().join(format!("towerscope-openapi-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let yaml = dir.join("spec.yaml");
    let json = dir.join("spec.JSON");
    fs::write(&yaml, PETS).unwrap();
    fs::write(
        &json,
        r#"{"swagger": "2.0", "paths": {"/a": {"get": {"operationId": "a"}}}}"#,
    )
    .unwrap();
    assert_eq!(OpenApiResolver::from_path(&yaml).unwrap().len(), 11);
    assert_eq!(OpenApiResolver::from_path(&json).unwrap().len(), 1);
    let missing = dir.join("missing.yaml");
    let err = OpenApiResolver::from_path(&missing).unwrap_err();
    assert!(matches!(&err, OpenApiError::Io { path, .. } if *path == missing));
    assert!(err.to_string().contains("missing.yaml"), "{err}");
    fs::remove_dir_all(&dir).unwrap();
}

fn yaml_error(yaml: &str) -> OpenApiError {
    OpenApiResolver::from_yaml_str(yaml).unwrap_err()
}

#[test]
fn documents_that_are_not_openapi_are_rejected() {
    for yaml in [
        "",
        "~",
        "hello",
        "42",
        "[1, 2]",
        "info: {title: x}",
        "paths: {}",
    ] {
        let err = yaml_error(yaml);
        assert!(matches!(err, OpenApiError::NotOpenApi), "{yaml:?}: {err}");
    }
    let err = OpenApiResolver::from_json_str("[]").unwrap_err();
    assert!(matches!(err, OpenApiError::NotOpenApi), "{err}");
    let err = OpenApiResolver::from_value(serde_json::Value::Null).unwrap_err();
    assert!(matches!(err, OpenApiError::NotOpenApi), "{err}");

    let err = yaml_error("swagger: '1.2'\npaths: {}");
    assert!(matches!(
        &err,
        OpenApiError::UnsupportedVersion { field: "swagger", version } if version == "1.2"
    ));
    assert_eq!(
        err.to_string(),
        "unsupported `swagger: 1.2`: expected `swagger: \"2.0\"` or `openapi: 3.x`"
    );
    let err = yaml_error("openapi: 4.0.0\npaths: {}");
    assert!(matches!(
        err,
        OpenApiError::UnsupportedVersion {
            field: "openapi",
            ..
        }
    ));
}

#[test]
fn malformed_documents_say_where() {
    let err = yaml_error("swagger: '2.0'\npaths:\n  /a: [\n");
    assert!(matches!(err, OpenApiError::Yaml { .. }), "{err}");
    assert!(err.to_string().contains("line"), "{err}");

    let err = yaml_error("swagger: '2.0'\npaths:\n  /a:\n    get:\n      operationId: [x]\n");
    assert!(
        matches!(&err, OpenApiError::Yaml { at, .. } if at == "paths./a.get.operationId"),
        "{err}"
    );
    assert!(
        err.to_string().contains("`paths./a.get.operationId`"),
        "{err}"
    );

    let err = yaml_error("swagger: '2.0'\npaths: [/a]\n");
    assert!(
        matches!(&err, OpenApiError::Yaml { at, .. } if at == "paths"),
        "{err}"
    );

    let err = OpenApiResolver::from_json_str(r#"{"swagger": "2.0"} trailing"#).unwrap_err();
    assert!(matches!(err, OpenApiError::Json { .. }), "{err}");
    let err = OpenApiResolver::from_json_str(r#"{"swagger": "2.0", "basePath": {}}"#).unwrap_err();
    assert!(
        matches!(&err, OpenApiError::Json { at, .. } if at == "basePath"),
        "{err}"
    );
}

#[test]
fn unroutable_templates_are_rejected() {
    let cases = [
        ("/files/{name}.json", "static suffix"),
        ("/files/{a}{b}", "static suffix"),
        ("/files/{name", "without its `}`"),
        ("/files/{na/me}", "without its `}`"),
        ("/files/{}", "without a name"),
        ("files", "start with `/`"),
    ];
    for (template, reason_part) in cases {
        let yaml = format!(
                "swagger: '2.0'\npaths:\n  /ok:\n    get: {{operationId: ok}}\n  \"{template}\":\n    parameters: []\n    post: {{operationId: bad}}\n"
            );
        let err = yaml_error(&yaml);
        let OpenApiError::InvalidTemplate {
            method,
            path,
            reason,
        } = &err
        else {
            panic!("{template}: {err}");
        };
        assert_eq!(method, Method::POST);
        assert_eq!(path, template);
        assert!(reason.contains(reason_part), "{template}: {reason}");
        assert!(err.to_string().contains(template), "{err}");
    }
    // A template without operations is not looked at.
    let yaml = "swagger: '2.0'\npaths:\n  /files/{name}.json:\n    get: {summary: x}\n";
    assert!(OpenApiResolver::from_yaml_str(yaml).unwrap().is_empty());
}

#[test]
fn catch_all_syntax_is_an_ordinary_parameter() {
    let resolver = OpenApiResolver::from_yaml_str(
        "swagger: '2.0'\npaths:\n  /files/{*path}:\n    get: {operationId: file}\n",
    )
    .unwrap();
    assert_eq!(get(&resolver, "/files/a"), Some("file"));
    assert_eq!(get(&resolver, "/files/a/b"), None);
}
