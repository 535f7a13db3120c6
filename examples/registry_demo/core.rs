//! The core component: a Harbor-like subset of `/api/v2.0/` (health, system info, projects,
//! repositories, artifacts, tags and garbage collection). Response shapes follow Harbor's.

use axum::{
    extract::{Path, State},
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use percent_encoding::percent_decode_str;
use serde_json::{json, Value};

use crate::{
    db::{Artifact, GcRun, Member, Project, ProjectError, Repository, Tag},
    gc::{self, GC_JOB},
    AppState, Json,
};

/// The routes of the core API (under `/api/v2.0`).
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v2.0/health", get(health))
        .route("/api/v2.0/systeminfo", get(system_info))
        .route(
            "/api/v2.0/projects",
            get(list_projects).post(create_project),
        )
        .route(
            "/api/v2.0/projects/{project}",
            get(get_project).delete(delete_project),
        )
        .route(
            "/api/v2.0/projects/{project}/members",
            get(list_members).post(create_member),
        )
        .route(
            "/api/v2.0/projects/{project}/members/{mid}",
            axum::routing::delete(delete_member),
        )
        .route(
            "/api/v2.0/projects/{project}/repositories",
            get(list_repositories),
        )
        .route(
            "/api/v2.0/projects/{project}/repositories/{repository}/artifacts",
            get(list_artifacts),
        )
        .route(
            "/api/v2.0/projects/{project}/repositories/{repository}/artifacts/{reference}/tags",
            get(list_tags),
        )
        .route("/api/v2.0/system/gc", get(gc_history))
        .route("/api/v2.0/system/gc/{id}", get(get_gc))
        .route(
            "/api/v2.0/system/gc/schedule",
            get(get_gc_schedule)
                .post(create_gc_schedule)
                .put(update_gc_schedule),
        )
}

/// A Harbor error response.
pub(crate) fn harbor_error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "errors": [{ "code": code, "message": message.into() }] })),
    )
        .into_response()
}

fn internal(err: impl std::fmt::Display) -> Response {
    tracing::error!(error = %err, "core request failed");
    harbor_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "UNKNOWN",
        "internal error",
    )
}

/// Answers the requests under `/api/v2.0` that the demo does not implement.
pub(crate) fn not_implemented() -> Response {
    harbor_error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "not implemented by the registry demo",
    )
}

async fn health(State(state): State<AppState>) -> Json<Value> {
    let database = match sqlx_ping(&state).await {
        Ok(()) => json!({ "name": "database", "status": "healthy" }),
        Err(e) => json!({ "name": "database", "status": "unhealthy", "error": e.to_string() }),
    };
    let healthy = database["status"] == "healthy";
    Json(json!({
        "status": if healthy { "healthy" } else { "unhealthy" },
        "components": [
            { "name": "core", "status": "healthy" },
            database,
            { "name": "jobservice", "status": "healthy" },
            { "name": "registry", "status": "healthy" },
        ],
    }))
}

async fn sqlx_ping(state: &AppState) -> Result<(), sqlx::Error> {
    state.db.projects().await.map(|_| ())
}

async fn system_info(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "harbor_version": concat!("towerscope-registry-demo-", env!("CARGO_PKG_VERSION")),
        "registry_url": state.listen.to_string(),
        "external_url": format!("http://{}", state.listen),
        "auth_mode": "db_auth",
        "project_creation_restriction": "everyone",
        "self_registration": false,
        "has_ca_root": false,
        "read_only": false,
        "with_chartmuseum": false,
        "notification_enable": false,
    }))
}

fn project_json(p: &Project) -> Value {
    json!({
        "project_id": p.id,
        "name": p.name,
        "owner_id": 1,
        "owner_name": "admin",
        "repo_count": p.repo_count,
        "creation_time": p.creation_time,
        "update_time": p.creation_time,
        "deleted": false,
        "metadata": { "public": if p.public { "true" } else { "false" } },
    })
}

async fn list_projects(State(state): State<AppState>) -> Response {
    match state.db.projects().await {
        Ok(projects) => {
            let list: Vec<Value> = projects.iter().map(project_json).collect();
            let mut response = Json(list).into_response();
            response
                .headers_mut()
                .insert("x-total-count", HeaderValue::from(projects.len()));
            response
        }
        Err(e) => internal(e),
    }
}

async fn create_project(State(state): State<AppState>, body: axum::body::Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return harbor_error(StatusCode::BAD_REQUEST, "BAD_REQUEST", "invalid JSON body");
    };
    let Some(name) = body.get("project_name").and_then(Value::as_str) else {
        return harbor_error(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "project_name is required",
        );
    };
    let valid = !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if !valid {
        return harbor_error(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "invalid project name",
        );
    }
    let public = body
        .pointer("/metadata/public")
        .and_then(Value::as_str)
        .is_some_and(|v| v == "true")
        || body.get("public").and_then(Value::as_bool).unwrap_or(false);
    match state.db.create_project(name, public).await {
        Ok(id) => {
            let mut response = StatusCode::CREATED.into_response();
            if let Ok(location) = HeaderValue::from_str(&format!("/api/v2.0/projects/{id}")) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            response
        }
        Err(ProjectError::Conflict) => harbor_error(
            StatusCode::CONFLICT,
            "CONFLICT",
            format!("the project named {name} already exists"),
        ),
        Err(e) => internal(e),
    }
}

async fn find_project(state: &AppState, name_or_id: &str) -> Result<Project, Response> {
    match state.db.project(name_or_id).await {
        Ok(Some(project)) => Ok(project),
        Ok(None) => Err(harbor_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("project {name_or_id} not found"),
        )),
        Err(e) => Err(internal(e)),
    }
}

async fn get_project(State(state): State<AppState>, Path(project): Path<String>) -> Response {
    match find_project(&state, &project).await {
        Ok(p) => Json(project_json(&p)).into_response(),
        Err(response) => response,
    }
}

async fn delete_project(State(state): State<AppState>, Path(project): Path<String>) -> Response {
    let project = match find_project(&state, &project).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    match state.db.delete_project(project.id).await {
        Ok(_) => StatusCode::OK.into_response(),
        Err(ProjectError::NotEmpty) => harbor_error(
            StatusCode::PRECONDITION_FAILED,
            "PRECONDITION",
            "the project contains repositories and cannot be deleted",
        ),
        Err(e) => internal(e),
    }
}

/// Harbor's role names by `role_id`.
const ROLES: [&str; 5] = [
    "projectAdmin",
    "developer",
    "guest",
    "maintainer",
    "limitedGuest",
];

fn member_json(m: &Member) -> Value {
    let role = usize::try_from(m.role_id - 1)
        .ok()
        .and_then(|i| ROLES.get(i))
        .copied()
        .unwrap_or("unknown");
    json!({
        "id": m.id,
        "project_id": m.project_id,
        "entity_name": m.entity_name,
        "entity_type": m.entity_type,
        "role_id": m.role_id,
        "role_name": role,
        "creation_time": m.creation_time,
    })
}

async fn list_members(State(state): State<AppState>, Path(project): Path<String>) -> Response {
    let project = match find_project(&state, &project).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    match state.db.members(project.id).await {
        Ok(members) => Json(members.iter().map(member_json).collect::<Vec<_>>()).into_response(),
        Err(e) => internal(e),
    }
}

/// `POST .../members` with Harbor's `{"role_id": 2, "member_user": {"username": "alice"}}`
/// (users only: the demo has no groups).
async fn create_member(
    State(state): State<AppState>,
    Path(project): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let project = match find_project(&state, &project).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return harbor_error(StatusCode::BAD_REQUEST, "BAD_REQUEST", "invalid JSON body");
    };
    let role = body.get("role_id").and_then(Value::as_i64);
    let Some(role) = role.filter(|r| (1..=ROLES.len() as i64).contains(r)) else {
        return harbor_error(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "role_id must be 1 (projectAdmin), 2 (developer), 3 (guest), 4 (maintainer) or 5 (limitedGuest)",
        );
    };
    let name = body
        .pointer("/member_user/username")
        .and_then(Value::as_str);
    let Some(name) = name.filter(|n| !n.is_empty() && n.len() <= 255) else {
        return harbor_error(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "member_user.username (1 to 255 bytes) is required; the demo has no member groups",
        );
    };
    match state.db.add_member(project.id, name, role).await {
        Ok(Some(id)) => {
            let mut response = StatusCode::CREATED.into_response();
            let location = format!("/api/v2.0/projects/{}/members/{id}", project.id);
            if let Ok(location) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            response
        }
        Ok(None) => harbor_error(
            StatusCode::CONFLICT,
            "CONFLICT",
            format!("{name} is already a member of {}", project.name),
        ),
        Err(e) => internal(e),
    }
}

async fn delete_member(
    State(state): State<AppState>,
    Path((project, mid)): Path<(String, i64)>,
) -> Response {
    let project = match find_project(&state, &project).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    match state.db.delete_member(project.id, mid).await {
        Ok(true) => StatusCode::OK.into_response(),
        Ok(false) => harbor_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("member {mid} of {} not found", project.name),
        ),
        Err(e) => internal(e),
    }
}

fn repository_json(r: &Repository) -> Value {
    json!({
        "id": r.id,
        "project_id": r.project_id,
        "name": r.name,
        "artifact_count": r.artifact_count,
        "pull_count": 0,
        "creation_time": r.creation_time,
        "update_time": r.creation_time,
    })
}

async fn list_repositories(State(state): State<AppState>, Path(project): Path<String>) -> Response {
    let project = match find_project(&state, &project).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    match state.db.repositories(project.id).await {
        Ok(repos) => {
            let list: Vec<Value> = repos.iter().map(repository_json).collect();
            let mut response = Json(list).into_response();
            response
                .headers_mut()
                .insert("x-total-count", HeaderValue::from(repos.len()));
            response
        }
        Err(e) => internal(e),
    }
}

/// The full repository name from Harbor's path parameters: the repository name is given
/// without its project and double-encoded (`a%252Fb` for `a/b`); axum decoded it once.
pub(crate) fn full_repository_name(project: &str, repository: &str) -> String {
    let decoded = percent_decode_str(repository).decode_utf8_lossy();
    format!("{project}/{decoded}")
}

async fn find_repository(
    state: &AppState,
    project: &str,
    repository: &str,
) -> Result<Repository, Response> {
    let name = full_repository_name(project, repository);
    match state.db.repository(&name).await {
        Ok(Some(repo)) => Ok(repo),
        Ok(None) => Err(harbor_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("repository {name} not found"),
        )),
        Err(e) => Err(internal(e)),
    }
}

fn tag_json(t: &Tag, artifact_id: i64) -> Value {
    json!({
        "id": t.id,
        "repository_id": t.repository_id,
        "artifact_id": artifact_id,
        "name": t.name,
        "push_time": t.push_time,
        "pull_time": "0001-01-01T00:00:00.000Z",
        "immutable": false,
    })
}

fn artifact_json(a: &Artifact, project_id: i64, tags: &[Tag]) -> Value {
    json!({
        "id": a.id,
        "type": "IMAGE",
        "media_type": a.media_type,
        "manifest_media_type": a.media_type,
        "project_id": project_id,
        "repository_id": a.repository_id,
        "digest": a.digest,
        "size": a.size,
        "push_time": a.push_time,
        "pull_time": "0001-01-01T00:00:00.000Z",
        "tags": tags.iter().map(|t| tag_json(t, a.id)).collect::<Vec<_>>(),
    })
}

async fn list_artifacts(
    State(state): State<AppState>,
    Path((project, repository)): Path<(String, String)>,
) -> Response {
    let repo = match find_repository(&state, &project, &repository).await {
        Ok(r) => r,
        Err(response) => return response,
    };
    let artifacts = match state.db.artifacts(repo.id).await {
        Ok(a) => a,
        Err(e) => return internal(e),
    };
    let mut list = Vec::with_capacity(artifacts.len());
    for artifact in &artifacts {
        match state.db.tags_of(repo.id, &artifact.digest).await {
            Ok(tags) => list.push(artifact_json(artifact, repo.project_id, &tags)),
            Err(e) => return internal(e),
        }
    }
    let mut response = Json(list).into_response();
    response
        .headers_mut()
        .insert("x-total-count", HeaderValue::from(artifacts.len()));
    response
}

async fn list_tags(
    State(state): State<AppState>,
    Path((project, repository, reference)): Path<(String, String, String)>,
) -> Response {
    let repo = match find_repository(&state, &project, &repository).await {
        Ok(r) => r,
        Err(response) => return response,
    };
    let digest = match state.db.resolve_reference(&repo.name, &reference).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            return harbor_error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                format!("artifact {}@{reference} not found", repo.name),
            )
        }
        Err(e) => return internal(e),
    };
    let artifact_id = match state.db.artifacts(repo.id).await {
        Ok(list) => list.iter().find(|a| a.digest == digest).map_or(0, |a| a.id),
        Err(e) => return internal(e),
    };
    match state.db.tags_of(repo.id, &digest).await {
        Ok(tags) => Json(
            tags.iter()
                .map(|t| tag_json(t, artifact_id))
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => internal(e),
    }
}

fn gc_json(run: &GcRun) -> Value {
    json!({
        "id": run.id,
        "job_name": GC_JOB,
        "job_kind": if run.schedule_type == "Manual" { "MANUAL" } else { "SCHEDULE" },
        "job_parameters": json!({ "delete_untagged": false, "dry_run": false }).to_string(),
        "schedule": { "type": run.schedule_type },
        "job_status": run.status,
        "deleted": false,
        "deleted_blobs": run.deleted_blobs,
        "freed_bytes": run.freed_bytes,
        "creation_time": run.creation_time,
        "update_time": run.update_time,
    })
}

async fn gc_history(State(state): State<AppState>) -> Response {
    match state.db.gc_runs().await {
        Ok(runs) => {
            let mut response = Json(runs.iter().map(gc_json).collect::<Vec<_>>()).into_response();
            response
                .headers_mut()
                .insert("x-total-count", HeaderValue::from(runs.len()));
            response
        }
        Err(e) => internal(e),
    }
}

async fn get_gc(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return harbor_error(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "gc_id must be an integer",
        );
    };
    match state.db.gc_run(id).await {
        Ok(Some(run)) => Json(gc_json(&run)).into_response(),
        Ok(None) => harbor_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("GC {id} not found"),
        ),
        Err(e) => internal(e),
    }
}

/// `GET /system/gc/schedule`: the periodic schedule, Harbor's `ScheduleObj` under `schedule`.
async fn get_gc_schedule(State(state): State<AppState>) -> Json<Value> {
    Json(match state.gc.periodic() {
        Some((period, next)) => json!({ "schedule": {
            "type": period.as_str(),
            "cron": period.cron(),
            "next_scheduled_time": gc::rfc3339(next),
        }}),
        None => json!({ "schedule": { "type": "None" } }),
    })
}

/// `POST /system/gc/schedule` (201): `Manual` queues a run now (its URL in `Location`);
/// `Hourly`, `Daily` and `Weekly` set the periodic schedule, `None` removes it.
async fn create_gc_schedule(state: State<AppState>, body: axum::body::Bytes) -> Response {
    set_gc_schedule(state, body, StatusCode::CREATED).await
}

/// `PUT /system/gc/schedule` (200): as `POST`.
async fn update_gc_schedule(state: State<AppState>, body: axum::body::Bytes) -> Response {
    set_gc_schedule(state, body, StatusCode::OK).await
}

async fn set_gc_schedule(
    State(state): State<AppState>,
    body: axum::body::Bytes,
    done: StatusCode,
) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return harbor_error(StatusCode::BAD_REQUEST, "BAD_REQUEST", "invalid JSON body");
    };
    let schedule_type = match body.pointer("/schedule/type").and_then(Value::as_str) {
        Some(t) => t,
        None => {
            return harbor_error(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                "schedule.type is required",
            )
        }
    };
    match (schedule_type, gc::Period::parse(schedule_type)) {
        ("Manual", _) => {}
        ("None", _) => {
            gc::set_periodic(&state, None);
            return done.into_response();
        }
        (_, Some(period)) => {
            gc::set_periodic(&state, Some(period));
            return done.into_response();
        }
        ("Custom" | "Schedule", None) => {
            return harbor_error(
                StatusCode::NOT_IMPLEMENTED,
                "NOT_IMPLEMENTED",
                "cron schedules are not implemented by the demo: use Hourly, Daily, Weekly, Manual or None",
            )
        }
        (other, None) => {
            return harbor_error(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                format!("unknown schedule type {other:?}"),
            )
        }
    }
    match gc::schedule(&state, "Manual").await {
        Ok(id) => {
            let mut response = done.into_response();
            if let Ok(location) = HeaderValue::from_str(&format!("/api/v2.0/system/gc/{id}")) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            response
        }
        Err(e) => internal(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names_are_decoded_the_second_time() {
        // axum decoded `library%252Fnginx` once, to `library%2Fnginx`.
        assert_eq!(full_repository_name("library", "hello"), "library/hello");
        assert_eq!(full_repository_name("library", "a%2Fb"), "library/a/b");
    }
}
