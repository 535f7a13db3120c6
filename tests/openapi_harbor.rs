//! `OpenApiResolver` on Harbor's real API document (Swagger 2.0, `basePath: /api/v2.0`).

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::OnceLock,
};

use http::{Method, Request};
use serde_norway::Value;
use towerscope::{
    openapi::OpenApiResolver,
    operation::{OperationResolver, RequestRef},
};

const SPEC: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/data/harbor-swagger.yaml"
);
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn harbor() -> &'static OpenApiResolver {
    static RESOLVER: OnceLock<OpenApiResolver> = OnceLock::new();
    RESOLVER.get_or_init(|| OpenApiResolver::from_path(SPEC).expect("the Harbor spec loads"))
}

/// Resolves a request built from `method` and `uri`, through the `OperationResolver` trait.
fn resolve(method: &str, uri: &str) -> Option<String> {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .body(())
        .unwrap_or_else(|err| panic!("{method} {uri}: {err}"));
    harbor()
        .resolve(&RequestRef::from(&request))
        .map(|id| id.to_string())
}

/// One operation of the spec, read independently of the resolver.
struct SpecOperation {
    method: String,
    template: String,
    id: String,
}

fn spec_operations() -> Vec<SpecOperation> {
    let text = std::fs::read_to_string(SPEC).expect("the Harbor spec is readable");
    let spec: Value = serde_norway::from_str(&text).expect("the Harbor spec is YAML");
    assert_eq!(spec["basePath"].as_str(), Some("/api/v2.0"));
    let paths = spec["paths"].as_mapping().expect("paths is a mapping");
    let mut operations = Vec::new();
    for (template, item) in paths {
        let template = template.as_str().expect("path keys are strings");
        for method in METHODS {
            if let Some(id) = item.get(method).and_then(|op| op.get("operationId")) {
                operations.push(SpecOperation {
                    method: method.to_uppercase(),
                    template: template.to_owned(),
                    id: id.as_str().expect("operationIds are strings").to_owned(),
                });
            }
        }
    }
    operations
}

#[test]
fn loads_all_203_operations() {
    let resolver = harbor();
    assert_eq!(resolver.len(), 203);
    assert_eq!(resolver.duplicates(), 0);
    assert_eq!(resolver.base_paths().collect::<Vec<_>>(), ["/api/v2.0"]);

    let spec = spec_operations();
    assert_eq!(spec.len(), 203);
    let templates: BTreeSet<&str> = spec.iter().map(|op| op.template.as_str()).collect();
    assert_eq!(templates.len(), 135);
    let expected: Vec<(&str, &str, &str)> = spec
        .iter()
        .map(|op| (op.method.as_str(), op.template.as_str(), op.id.as_str()))
        .collect();
    let registered: Vec<(&str, &str, &str)> = resolver
        .operations()
        .map(|(method, template, id)| (method.as_str(), template, id.as_str()))
        .collect();
    fn sorted<'a>(mut v: Vec<(&'a str, &'a str, &'a str)>) -> Vec<(&'a str, &'a str, &'a str)> {
        v.sort_unstable();
        v
    }
    // Same set; the resolver keeps document order within a path item, the spec walk above
    // goes by method.
    assert_eq!(
        sorted(registered.clone()),
        sorted(expected.clone()),
        "registered operations differ from the spec"
    );
}

const REPO: &str = "/api/v2.0/projects/library/repositories/nginx";
const DIGEST: &str = "sha256:4b8f2ec4ad0b2c1a9f4e8f0d6e2cbb1f3a4e5d6c7b8a9f0e1d2c3b4a5f6e7d8c";

/// Hand-written requests and the `operationId` the Harbor spec gives each. `@REPO` stands for
/// `/api/v2.0/projects/library/repositories/nginx` and `@DIGEST` for an artifact digest.
#[rustfmt::skip]
const REQUESTS: &[(&str, &str, &str)] = &[
    // Top-level resources.
    ("GET", "/api/v2.0/health", "getHealth"),
    ("GET", "/api/v2.0/search?q=nginx", "search"),
    ("GET", "/api/v2.0/statistics", "getStatistic"),
    ("GET", "/api/v2.0/ping", "getPing"),
    ("GET", "/api/v2.0/permissions", "getPermissions"),
    ("GET", "/api/v2.0/internalconfig", "getInternalconfig"),
    ("GET", "/api/v2.0/configurations", "getConfigurations"),
    ("PUT", "/api/v2.0/configurations", "updateConfigurations"),
    ("GET", "/api/v2.0/repositories", "listAllRepositories"),
    ("GET", "/api/v2.0/audit-logs", "listAuditLogs"),
    ("GET", "/api/v2.0/auditlog-exts", "listAuditLogExts"),
    ("GET", "/api/v2.0/auditlog-exts/events", "listAuditLogEventTypes"),
    ("GET", "/api/v2.0/icons/sha256:0f3a1c", "getIcon"),
    // LDAP.
    ("POST", "/api/v2.0/ldap/ping", "pingLdap"),
    ("GET", "/api/v2.0/ldap/users/search?username=bob", "searchLdapUser"),
    ("POST", "/api/v2.0/ldap/users/import", "importLdapUser"),
    ("GET", "/api/v2.0/ldap/groups/search", "searchLdapGroup"),
    // Projects: `{project_name_or_id}` and `{project_name}` at the same position.
    ("GET", "/api/v2.0/projects", "listProjects"),
    ("GET", "/api/v2.0/projects/?page=2", "listProjects"),
    ("HEAD", "/api/v2.0/projects?project_name=library", "headProject"),
    ("POST", "/api/v2.0/projects", "createProject"),
    ("GET", "/api/v2.0/projects/library", "getProject"),
    ("GET", "/api/v2.0/projects/1/", "getProject"),
    ("PUT", "/api/v2.0/projects/1", "updateProject"),
    ("DELETE", "/api/v2.0/projects/library", "deleteProject"),
    ("HEAD", "/api/v2.0/projects/library", "getProject"),
    ("GET", "/api/v2.0/projects/library/_deletable", "getProjectDeletable"),
    ("GET", "/api/v2.0/projects/library/summary", "getProjectSummary"),
    ("GET", "/api/v2.0/projects/library/logs", "getLogs"),
    ("GET", "/api/v2.0/projects/library/auditlog-exts", "getLogExts"),
    ("GET", "/api/v2.0/projects/library/artifacts", "listArtifactsOfProject"),
    ("GET", "/api/v2.0/projects/library/scanner", "getScannerOfProject"),
    ("PUT", "/api/v2.0/projects/1/scanner", "setScannerOfProject"),
    ("GET", "/api/v2.0/projects/1/scanner/candidates", "listScannerCandidatesOfProject"),
    ("GET", "/api/v2.0/projects/library/members", "listProjectMembers"),
    ("POST", "/api/v2.0/projects/library/members", "createProjectMember"),
    ("GET", "/api/v2.0/projects/library/members/3", "getProjectMember"),
    ("PUT", "/api/v2.0/projects/library/members/3", "updateProjectMember"),
    ("DELETE", "/api/v2.0/projects/library/members/3", "deleteProjectMember"),
    // The spec writes this template with a trailing slash: both forms resolve.
    ("GET", "/api/v2.0/projects/library/metadatas/", "listProjectMetadatas"),
    ("GET", "/api/v2.0/projects/library/metadatas", "listProjectMetadatas"),
    ("POST", "/api/v2.0/projects/library/metadatas/", "addProjectMetadatas"),
    ("GET", "/api/v2.0/projects/library/metadatas/auto_scan", "getProjectMetadata"),
    ("PUT", "/api/v2.0/projects/library/metadatas/public", "updateProjectMetadata"),
    ("DELETE", "/api/v2.0/projects/library/metadatas/severity", "deleteProjectMetadata"),
    // Repositories: Harbor double-encodes the `/` of nested names as `%252F`.
    ("GET", "/api/v2.0/projects/library/repositories", "listRepositories"),
    ("GET", "@REPO", "getRepository"),
    ("GET", "/api/v2.0/projects/library/repositories/team%252Fnginx", "getRepository"),
    ("GET", "/api/v2.0/projects/library/repositories/team%2Fnginx", "getRepository"),
    ("PUT", "@REPO", "updateRepository"),
    ("DELETE", "/api/v2.0/projects/library/repositories/a%252Fb%252Fc", "deleteRepository"),
    ("GET", "@REPO/artifacts", "listArtifacts"),
    ("GET", "/api/v2.0/projects/library/repositories/library%252Fnginx/artifacts?with_tag=true", "listArtifacts"),
    ("POST", "@REPO/artifacts?from=library/busybox:latest", "CopyArtifact"),
    // Artifacts, by digest or tag.
    ("GET", "@REPO/artifacts/@DIGEST", "getArtifact"),
    ("GET", "@REPO/artifacts/latest", "getArtifact"),
    ("HEAD", "@REPO/artifacts/@DIGEST", "getArtifact"),
    ("GET", "/api/v2.0/projects/library/repositories/library%252Fnginx/artifacts/@DIGEST", "getArtifact"),
    ("DELETE", "@REPO/artifacts/@DIGEST", "deleteArtifact"),
    ("POST", "@REPO/artifacts/latest/scan", "scanArtifact"),
    ("POST", "@REPO/artifacts/@DIGEST/scan/stop", "stopScanArtifact"),
    ("GET", "@REPO/artifacts/@DIGEST/scan/5f1e7a0c-8b43-4c0e-9a57-3d2d1c0b9e8f/log", "getReportLog"),
    // `stop` is a literal only under POST; for GET it is a report id.
    ("GET", "@REPO/artifacts/latest/scan/stop/log", "getReportLog"),
    ("GET", "@REPO/artifacts/latest/tags", "listTags"),
    ("POST", "@REPO/artifacts/latest/tags", "createTag"),
    ("DELETE", "@REPO/artifacts/@DIGEST/tags/v1", "deleteTag"),
    ("DELETE", "@REPO/artifacts/latest/tags/1.25.3-alpine", "deleteTag"),
    ("DELETE", "/api/v2.0/projects/library/repositories/team%252Fnginx/artifacts/latest/tags/v1", "deleteTag"),
    ("GET", "@REPO/artifacts/@DIGEST/accessories", "listAccessories"),
    ("GET", "@REPO/artifacts/@DIGEST/additions/vulnerabilities", "getVulnerabilitiesAddition"),
    ("GET", "@REPO/artifacts/@DIGEST/additions/build_history", "getAddition"),
    ("GET", "@REPO/artifacts/latest/additions/readme.md", "getAddition"),
    ("GET", "@REPO/artifacts/latest/additions/values.yaml", "getAddition"),
    ("GET", "@REPO/artifacts/latest/additions/dependencies", "getAddition"),
    ("POST", "@REPO/artifacts/@DIGEST/labels", "addLabel"),
    ("DELETE", "@REPO/artifacts/@DIGEST/labels/7", "removeLabel"),
    // P2P preheat.
    ("GET", "/api/v2.0/p2p/preheat/providers", "ListProviders"),
    ("POST", "/api/v2.0/p2p/preheat/instances/ping", "PingInstances"),
    ("GET", "/api/v2.0/p2p/preheat/instances", "ListInstances"),
    ("POST", "/api/v2.0/p2p/preheat/instances", "CreateInstance"),
    ("GET", "/api/v2.0/p2p/preheat/instances/dragonfly", "GetInstance"),
    // `ping` is a literal only under POST.
    ("GET", "/api/v2.0/p2p/preheat/instances/ping", "GetInstance"),
    ("DELETE", "/api/v2.0/p2p/preheat/instances/dragonfly", "DeleteInstance"),
    ("PUT", "/api/v2.0/p2p/preheat/instances/kraken", "UpdateInstance"),
    ("GET", "/api/v2.0/projects/library/preheat/providers", "ListProvidersUnderProject"),
    ("GET", "/api/v2.0/projects/library/preheat/policies", "ListPolicies"),
    ("POST", "/api/v2.0/projects/library/preheat/policies", "CreatePolicy"),
    ("GET", "/api/v2.0/projects/library/preheat/policies/nightly", "GetPolicy"),
    ("PUT", "/api/v2.0/projects/library/preheat/policies/nightly", "UpdatePolicy"),
    ("POST", "/api/v2.0/projects/library/preheat/policies/nightly", "ManualPreheat"),
    ("DELETE", "/api/v2.0/projects/library/preheat/policies/nightly", "DeletePolicy"),
    ("GET", "/api/v2.0/projects/library/preheat/policies/nightly/executions", "ListExecutions"),
    ("GET", "/api/v2.0/projects/library/preheat/policies/nightly/executions/12", "GetExecution"),
    ("PATCH", "/api/v2.0/projects/library/preheat/policies/nightly/executions/12", "StopExecution"),
    ("GET", "/api/v2.0/projects/library/preheat/policies/nightly/executions/12/tasks", "ListTasks"),
    ("GET", "/api/v2.0/projects/library/preheat/policies/nightly/executions/12/tasks/34/logs", "GetPreheatLog"),
    // Immutable tag rules and webhooks.
    ("GET", "/api/v2.0/projects/library/immutabletagrules", "ListImmuRules"),
    ("POST", "/api/v2.0/projects/library/immutabletagrules", "CreateImmuRule"),
    ("PUT", "/api/v2.0/projects/library/immutabletagrules/5", "UpdateImmuRule"),
    ("DELETE", "/api/v2.0/projects/library/immutabletagrules/5", "DeleteImmuRule"),
    ("GET", "/api/v2.0/projects/library/webhook/policies", "ListWebhookPoliciesOfProject"),
    ("POST", "/api/v2.0/projects/1/webhook/policies", "CreateWebhookPolicyOfProject"),
    ("GET", "/api/v2.0/projects/library/webhook/policies/9", "GetWebhookPolicyOfProject"),
    ("PUT", "/api/v2.0/projects/library/webhook/policies/9", "UpdateWebhookPolicyOfProject"),
    ("DELETE", "/api/v2.0/projects/library/webhook/policies/9", "DeleteWebhookPolicyOfProject"),
    ("GET", "/api/v2.0/projects/library/webhook/policies/9/executions", "ListExecutionsOfWebhookPolicy"),
    ("GET", "/api/v2.0/projects/library/webhook/policies/9/executions/11/tasks", "ListTasksOfWebhookExecution"),
    ("GET", "/api/v2.0/projects/library/webhook/policies/9/executions/11/tasks/13/log", "GetLogsOfWebhookTask"),
    ("GET", "/api/v2.0/projects/library/webhook/lasttrigger", "LastTrigger"),
    ("GET", "/api/v2.0/projects/library/webhook/jobs?policy_id=9", "ListWebhookJobs"),
    ("GET", "/api/v2.0/projects/library/webhook/events", "GetSupportedEventTypes"),
    // User groups, robots, quotas.
    ("GET", "/api/v2.0/usergroups", "listUserGroups"),
    ("POST", "/api/v2.0/usergroups", "createUserGroup"),
    ("GET", "/api/v2.0/usergroups/search?groupname=dev", "searchUserGroups"),
    ("GET", "/api/v2.0/usergroups/4", "getUserGroup"),
    ("PUT", "/api/v2.0/usergroups/4", "updateUserGroup"),
    ("DELETE", "/api/v2.0/usergroups/4", "deleteUserGroup"),
    ("GET", "/api/v2.0/robots", "ListRobot"),
    ("POST", "/api/v2.0/robots", "CreateRobot"),
    ("GET", "/api/v2.0/robots/8", "GetRobotByID"),
    ("PUT", "/api/v2.0/robots/8", "UpdateRobot"),
    ("PATCH", "/api/v2.0/robots/8", "RefreshSec"),
    ("DELETE", "/api/v2.0/robots/8", "DeleteRobot"),
    ("GET", "/api/v2.0/quotas", "listQuotas"),
    ("GET", "/api/v2.0/quotas/2", "getQuota"),
    ("PUT", "/api/v2.0/quotas/2", "updateQuota"),
    // Replication and registries.
    ("GET", "/api/v2.0/replication/policies", "listReplicationPolicies"),
    ("POST", "/api/v2.0/replication/policies", "createReplicationPolicy"),
    ("GET", "/api/v2.0/replication/policies/1", "getReplicationPolicy"),
    ("PUT", "/api/v2.0/replication/policies/1", "updateReplicationPolicy"),
    ("DELETE", "/api/v2.0/replication/policies/1", "deleteReplicationPolicy"),
    ("GET", "/api/v2.0/replication/executions", "listReplicationExecutions"),
    ("POST", "/api/v2.0/replication/executions", "startReplication"),
    ("GET", "/api/v2.0/replication/executions/21", "getReplicationExecution"),
    ("PUT", "/api/v2.0/replication/executions/21", "stopReplication"),
    ("GET", "/api/v2.0/replication/executions/21/tasks", "listReplicationTasks"),
    ("GET", "/api/v2.0/replication/executions/21/tasks/22/log", "getReplicationLog"),
    ("GET", "/api/v2.0/replication/adapters", "listRegistryProviderTypes"),
    ("GET", "/api/v2.0/replication/adapterinfos", "listRegistryProviderInfos"),
    ("GET", "/api/v2.0/registries", "listRegistries"),
    ("POST", "/api/v2.0/registries", "createRegistry"),
    ("POST", "/api/v2.0/registries/ping", "pingRegistry"),
    ("GET", "/api/v2.0/registries/3", "getRegistry"),
    // `ping` is a literal only under POST.
    ("GET", "/api/v2.0/registries/ping", "getRegistry"),
    ("PUT", "/api/v2.0/registries/3", "updateRegistry"),
    ("DELETE", "/api/v2.0/registries/3", "deleteRegistry"),
    ("GET", "/api/v2.0/registries/3/info", "getRegistryInfo"),
    // Scans and system information.
    ("GET", "/api/v2.0/scans/all/metrics", "getLatestScanAllMetrics"),
    ("GET", "/api/v2.0/scans/schedule/metrics", "getLatestScheduledScanAllMetrics"),
    ("GET", "/api/v2.0/systeminfo", "getSystemInfo"),
    ("GET", "/api/v2.0/systeminfo/volumes", "getVolumes"),
    ("GET", "/api/v2.0/systeminfo/getcert", "getCert"),
    // System jobs: `schedule` beside `{gc_id}` and `{purge_id}`.
    ("POST", "/api/v2.0/system/oidc/ping", "pingOIDC"),
    ("GET", "/api/v2.0/system/gc", "getGCHistory"),
    ("GET", "/api/v2.0/system/gc/15", "getGC"),
    ("PUT", "/api/v2.0/system/gc/15", "stopGC"),
    ("GET", "/api/v2.0/system/gc/15/log", "getGCLog"),
    ("GET", "/api/v2.0/system/gc/schedule", "getGCSchedule"),
    ("POST", "/api/v2.0/system/gc/schedule", "createGCSchedule"),
    ("PUT", "/api/v2.0/system/gc/schedule", "updateGCSchedule"),
    ("GET", "/api/v2.0/system/gc/schedule/", "getGCSchedule"),
    ("GET", "/api/v2.0/system/purgeaudit", "getPurgeHistory"),
    ("GET", "/api/v2.0/system/purgeaudit/16", "getPurgeJob"),
    ("PUT", "/api/v2.0/system/purgeaudit/16", "stopPurge"),
    ("GET", "/api/v2.0/system/purgeaudit/16/log", "getPurgeJobLog"),
    ("GET", "/api/v2.0/system/purgeaudit/schedule", "getPurgeSchedule"),
    ("POST", "/api/v2.0/system/purgeaudit/schedule", "createPurgeSchedule"),
    ("PUT", "/api/v2.0/system/purgeaudit/schedule", "updatePurgeSchedule"),
    ("GET", "/api/v2.0/system/CVEAllowlist", "getSystemCVEAllowlist"),
    ("PUT", "/api/v2.0/system/CVEAllowlist", "putSystemCVEAllowlist"),
    ("GET", "/api/v2.0/system/scanAll/schedule", "getScanAllSchedule"),
    ("PUT", "/api/v2.0/system/scanAll/schedule", "updateScanAllSchedule"),
    ("POST", "/api/v2.0/system/scanAll/schedule", "createScanAllSchedule"),
    ("POST", "/api/v2.0/system/scanAll/stop", "stopScanAll"),
    // Job service and schedules.
    ("GET", "/api/v2.0/jobservice/pools", "getWorkerPools"),
    ("GET", "/api/v2.0/jobservice/pools/all/workers", "getWorkers"),
    ("PUT", "/api/v2.0/jobservice/jobs/abc123", "stopRunningJob"),
    ("GET", "/api/v2.0/jobservice/jobs/abc123/log", "actionGetJobLog"),
    ("GET", "/api/v2.0/jobservice/queues", "listJobQueues"),
    ("PUT", "/api/v2.0/jobservice/queues/REPLICATION", "actionPendingJobs"),
    ("GET", "/api/v2.0/schedules", "listSchedules"),
    ("GET", "/api/v2.0/schedules/GARBAGE_COLLECTION/paused", "getSchedulePaused"),
    // Retentions: `metadatas` beside `{id}`.
    ("GET", "/api/v2.0/retentions/metadatas", "getRentenitionMetadata"),
    ("POST", "/api/v2.0/retentions", "createRetention"),
    ("GET", "/api/v2.0/retentions/6", "getRetention"),
    ("PUT", "/api/v2.0/retentions/6", "updateRetention"),
    ("DELETE", "/api/v2.0/retentions/6", "deleteRetention"),
    ("POST", "/api/v2.0/retentions/6/executions", "triggerRetentionExecution"),
    ("GET", "/api/v2.0/retentions/6/executions", "listRetentionExecutions"),
    ("PATCH", "/api/v2.0/retentions/6/executions/7", "operateRetentionExecution"),
    ("GET", "/api/v2.0/retentions/6/executions/7/tasks", "listRetentionTasks"),
    ("GET", "/api/v2.0/retentions/6/executions/7/tasks/8", "getRetentionTaskLog"),
    // Scanners.
    ("GET", "/api/v2.0/scanners", "listScanners"),
    ("POST", "/api/v2.0/scanners", "createScanner"),
    ("POST", "/api/v2.0/scanners/ping", "pingScanner"),
    ("GET", "/api/v2.0/scanners/0f3c6a2e", "getScanner"),
    ("PUT", "/api/v2.0/scanners/0f3c6a2e", "updateScanner"),
    ("DELETE", "/api/v2.0/scanners/0f3c6a2e", "deleteScanner"),
    ("PATCH", "/api/v2.0/scanners/0f3c6a2e", "setScannerAsDefault"),
    ("GET", "/api/v2.0/scanners/0f3c6a2e/metadata", "getScannerMetadata"),
    // Users: `current` and `search` beside `{user_id}`.
    ("GET", "/api/v2.0/users", "listUsers"),
    ("POST", "/api/v2.0/users", "createUser"),
    ("GET", "/api/v2.0/users/current", "getCurrentUserInfo"),
    ("GET", "/api/v2.0/users/current/", "getCurrentUserInfo"),
    ("HEAD", "/api/v2.0/users/current", "getCurrentUserInfo"),
    ("GET", "/api/v2.0/users/%63urrent", "getCurrentUserInfo"),
    ("GET", "/api/v2.0/users/current/permissions", "getCurrentUserPermissions"),
    ("GET", "/api/v2.0/users/search?username=ad", "searchUsers"),
    ("GET", "/api/v2.0/users/42", "getUser"),
    ("GET", "/api/v2.0/users/currently", "getUser"),
    ("PUT", "/api/v2.0/users/42", "updateUserProfile"),
    ("DELETE", "/api/v2.0/users/42", "deleteUser"),
    // `current` is a literal only under GET.
    ("DELETE", "/api/v2.0/users/current", "deleteUser"),
    ("PUT", "/api/v2.0/users/42/sysadmin", "setUserSysAdmin"),
    ("PUT", "/api/v2.0/users/42/password", "updateUserPassword"),
    ("PUT", "/api/v2.0/users/current/password", "updateUserPassword"),
    ("PUT", "/api/v2.0/users/42/cli_secret", "setCliSecret"),
    // Labels, CVE export, security hub.
    ("GET", "/api/v2.0/labels?scope=g", "ListLabels"),
    ("POST", "/api/v2.0/labels", "CreateLabel"),
    ("GET", "/api/v2.0/labels/3", "GetLabelByID"),
    ("PUT", "/api/v2.0/labels/3", "UpdateLabel"),
    ("DELETE", "/api/v2.0/labels/3", "DeleteLabel"),
    ("POST", "/api/v2.0/export/cve", "exportScanData"),
    ("GET", "/api/v2.0/export/cve/execution/99", "getScanDataExportExecution"),
    ("GET", "/api/v2.0/export/cve/executions", "getScanDataExportExecutionList"),
    ("GET", "/api/v2.0/export/cve/download/99", "downloadScanData"),
    ("GET", "/api/v2.0/security/summary", "getSecuritySummary"),
    ("GET", "/api/v2.0/security/vul", "ListVulnerabilities"),
    // HEAD falls back to GET, and an absolute-form URI resolves on its path.
    ("HEAD", "/api/v2.0/health", "getHealth"),
    ("HEAD", "/api/v2.0/systeminfo/volumes", "getVolumes"),
    ("GET", "https://harbor.example.com/api/v2.0/systeminfo", "getSystemInfo"),
    ("GET", "/api/v2%2E0/health", "getHealth"),
];

fn expand(uri: &str) -> String {
    uri.replace("@REPO", REPO).replace("@DIGEST", DIGEST)
}

#[test]
fn hand_written_requests_resolve_to_the_spec_operation() {
    assert!(REQUESTS.len() >= 120, "{} requests", REQUESTS.len());
    let spec_ids: BTreeSet<String> = spec_operations().into_iter().map(|op| op.id).collect();
    let mut methods = BTreeSet::new();
    let mut covered = BTreeSet::new();
    let mut failures = Vec::new();
    for &(method, uri, expected) in REQUESTS {
        assert!(spec_ids.contains(expected), "{expected} is not in the spec");
        let uri = expand(uri);
        let actual = resolve(method, &uri);
        if actual.as_deref() != Some(expected) {
            failures.push(format!(
                "{method} {uri}: expected {expected}, got {actual:?}"
            ));
        }
        methods.insert(method);
        covered.insert(expected);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        methods.into_iter().collect::<Vec<_>>(),
        ["DELETE", "GET", "HEAD", "PATCH", "POST", "PUT"]
    );
    // Every operation of the spec is exercised by at least one hand-written request.
    let uncovered: Vec<_> = spec_ids
        .iter()
        .filter(|id| !covered.contains(id.as_str()))
        .collect();
    assert!(uncovered.is_empty(), "not covered: {uncovered:?}");
}

/// Fills each `{param}` of `template` with `value(index, name)`.
fn fill(template: &str, mut value: impl FnMut(usize, &str) -> String) -> String {
    let mut filled = String::new();
    let mut rest = template;
    let mut index = 0;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').expect("closed parameter") + open;
        filled.push_str(&rest[..open]);
        filled.push_str(&value(index, &rest[open + 1..close]));
        index += 1;
        rest = &rest[close + 1..];
    }
    filled.push_str(rest);
    filled
}

/// A value that is no literal segment of any template: `x0`, `x1`, ...
fn synthetic(index: usize, _name: &str) -> String {
    format!("x{index}")
}

/// A realistic value for a Harbor path parameter.
fn realistic(index: usize, name: &str) -> String {
    match name {
        "repository_name" => "team%252Fnginx".to_owned(),
        "reference" => DIGEST.to_owned(),
        "tag_name" => "v1.2.3".to_owned(),
        "addition" => "build_history".to_owned(),
        "project_name" | "project_name_or_id" => "library".to_owned(),
        "meta_name" => "auto_scan".to_owned(),
        "digest" => "sha256:0f3a1c".to_owned(),
        "job_type" => "GARBAGE_COLLECTION".to_owned(),
        "preheat_instance_name" | "preheat_policy_name" => "dragonfly-1".to_owned(),
        "registration_id" | "report_id" => "5f1e7a0c-8b43-4c0e".to_owned(),
        _ => (index + 10).to_string(),
    }
}

#[test]
fn every_spec_operation_resolves_from_a_concrete_path() {
    let operations = spec_operations();
    // A substituted value equal to a literal segment could let a literal sibling win.
    let literals: BTreeSet<&str> = operations
        .iter()
        .flat_map(|op| op.template.split('/'))
        .filter(|segment| !segment.contains('{'))
        .collect();
    let head_templates: BTreeMap<&str, &str> = operations
        .iter()
        .filter(|op| op.method == "HEAD")
        .map(|op| (op.template.as_str(), op.id.as_str()))
        .collect();

    let mut failures = Vec::new();
    let mut checked = 0;
    for op in &operations {
        for filler in [synthetic, realistic] {
            let path = fill(&op.template, |index, name| {
                let value = filler(index, name);
                assert!(!literals.contains(value.as_str()), "{value} is a literal");
                value
            });
            let path = format!("/api/v2.0{path}");
            let trailing = format!("{}/", path.trim_end_matches('/'));
            let mut expect = |method: &str, uri: &str, expected: &str| {
                checked += 1;
                let actual = resolve(method, uri);
                if actual.as_deref() != Some(expected) {
                    failures.push(format!(
                        "{method} {uri} ({}): expected {expected}, got {actual:?}",
                        op.template
                    ));
                }
            };
            expect(&op.method, &path, &op.id);
            expect(&op.method, &trailing, &op.id);
            if op.method == "GET" {
                let head = head_templates
                    .get(op.template.as_str())
                    .copied()
                    .unwrap_or(&op.id);
                expect("HEAD", &path, head);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked > 2 * 2 * 203, "{checked}");
}

#[test]
fn requests_outside_the_api_do_not_resolve() {
    let cases = [
        ("GET", "/api/v2.0"),
        ("GET", "/api/v2.0/"),
        ("GET", "/"),
        ("GET", "/health"),
        ("GET", "/projects"),
        ("GET", "/api/projects"),
        ("GET", "/api/v2.1/projects"),
        ("GET", "/api/v2.0x/projects"),
        ("GET", "/API/v2.0/projects"),
        ("GET", "/v2/library/nginx/manifests/latest"),
        ("GET", "/service/token"),
        ("GET", "/c/login"),
        ("GET", "/api/v2.0/nonexistent"),
        ("GET", "/api/v2.0/projects/library/unknown"),
        ("GET", "/api/v2.0/users/42/unknown"),
        ("GET", "/api/v2.0/system/cveallowlist"),
        ("GET", "/api/v2.0/projects//members"),
        ("GET", "/api/v2.0/projects/library/members//"),
        ("GET", "/api/v2.0//projects"),
        // An unencoded `/` in a repository name splits it.
        (
            "GET",
            "/api/v2.0/projects/library/repositories/team/nginx/artifacts",
        ),
        (
            "GET",
            "/api/v2.0/projects/library/repositories/nginx/artifacts/latest/tags/v1/x",
        ),
        // Methods the path does not have, and methods the spec never uses.
        ("POST", "/api/v2.0/health"),
        ("DELETE", "/api/v2.0/projects"),
        ("PATCH", "/api/v2.0/projects/library"),
        ("POST", "/api/v2.0/users/current"),
        ("HEAD", "/api/v2.0/ldap/ping"),
        ("OPTIONS", "/api/v2.0/projects"),
        ("TRACE", "/api/v2.0/projects"),
        ("CONNECT", "/api/v2.0/projects"),
        ("PROPFIND", "/api/v2.0/projects"),
        ("get", "/api/v2.0/projects"),
    ];
    for (method, uri) in cases {
        assert_eq!(resolve(method, uri), None, "{method} {uri}");
    }
    let resolver = harbor();
    assert_eq!(resolver.resolve_path(&Method::OPTIONS, "*"), None);
    assert_eq!(resolver.resolve_path(&Method::GET, ""), None);
}

#[test]
fn base_path_override_moves_the_api() {
    let resolver = OpenApiResolver::from_path(SPEC)
        .expect("the Harbor spec loads")
        .with_base_path("/");
    let get = |path| {
        resolver
            .resolve_path(&Method::GET, path)
            .map(|id| id.as_str())
    };
    assert_eq!(get("/users/current"), Some("getCurrentUserInfo"));
    assert_eq!(get("/api/v2.0/users/current"), None);
}
