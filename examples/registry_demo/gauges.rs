//! Harbor-exporter-style gauges computed from the database at scrape time, under
//! `?comp=exporter` (and in the unfiltered output): `{ns}_project_total{public}`,
//! `{ns}_project_repo_total{project_name,public}`, `{ns}_project_artifact_total{project_name}`,
//! `{ns}_project_member_total{project_name}`, `{ns}_project_quota_usage_byte{project_name}`
//! (the bytes of the distinct blobs, layers and configs, its manifests refer to),
//! `{ns}_artifact_pulled{name}` and `{ns}_up{component}` (1 or 0: `core` answers this scrape,
//! `database` answers a query, `registry` has its storage directory, `jobservice` has its GC
//! worker running), where `{ns}` is `metric.namespace` (default `harbor`).
//!
//! They are the SDK endpoint's refresh hook ([`MetricsEndpoint::with_refresh`], see
//! [`ExporterGauges::refresh_for`]): a scrape that asks for everything or for `exporter` first
//! runs the queries and sets the gauges, then the endpoint renders as usual. Pulls (manifest
//! GETs answered 2xx) are counted in the database, in the demo's own `artifact_pull` table.
//!
//! [`MetricsEndpoint::with_refresh`]: towerscope::metrics::MetricsEndpoint::with_refresh

use std::{
    collections::BTreeSet,
    future::Future,
    sync::{Arc, Mutex, PoisonError},
};

use metrics::{Key, Label};
use sqlx::SqlitePool;
use towerscope::{
    metrics::toolkit::{Family, RecorderRef},
    Telemetry,
};

use crate::{gc::GcQueue, storage::Storage, AppState};

/// The `?comp=` component of these families.
pub(crate) const COMPONENT: &str = "exporter";

const PULL_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS artifact_pull (\
    name TEXT PRIMARY KEY, count INTEGER NOT NULL DEFAULT 0)";

/// Per project: name, public, repositories, artifacts, members, and the bytes of the distinct
/// blobs its manifests refer to (config and layers, read from the stored manifests with
/// SQLite's JSON functions; an index's manifests count through their own rows).
const PROJECTS: &str = "\
    WITH refs(project_id, digest) AS ( \
      SELECT r.project_id, json_extract(CAST(m.content AS TEXT), '$.config.digest') \
        FROM manifest m JOIN repository r ON r.id = m.repository_id \
        WHERE json_valid(CAST(m.content AS TEXT)) \
      UNION \
      SELECT r.project_id, json_extract(l.value, '$.digest') \
        FROM manifest m JOIN repository r ON r.id = m.repository_id, \
             json_each(CAST(m.content AS TEXT), '$.layers') l \
        WHERE json_valid(CAST(m.content AS TEXT)) \
    ) \
    SELECT p.name, p.public != 0, \
      (SELECT COUNT(*) FROM repository r WHERE r.project_id = p.id), \
      (SELECT COUNT(*) FROM manifest m JOIN repository r ON r.id = m.repository_id \
        WHERE r.project_id = p.id), \
      (SELECT COUNT(*) FROM project_member pm WHERE pm.project_id = p.id), \
      (SELECT COALESCE(SUM(b.size), 0) FROM refs JOIN blob b ON b.digest = refs.digest \
        WHERE refs.project_id = p.id) \
    FROM project p";

/// Counts pulls per repository in the database (off the request path).
#[derive(Debug, Clone)]
pub(crate) struct PullCounter {
    pool: SqlitePool,
}

impl PullCounter {
    /// Adds one pull of `repository`.
    pub(crate) fn record(&self, repository: String) {
        let pool = self.pool.clone();
        tokio::spawn(async move {
            let done = sqlx::query(
                "INSERT INTO artifact_pull (name, count) VALUES (?1, 1) \
                 ON CONFLICT(name) DO UPDATE SET count = count + 1",
            )
            .bind(&repository)
            .execute(&pool)
            .await;
            if let Err(err) = done {
                eprintln!("registry_demo: counting a pull of {repository}: {err}");
            }
        });
    }
}

/// A series: family name and labels.
type Series = (String, Vec<(String, String)>);

/// A series and its value.
type Sample = (String, Vec<(String, String)>, f64);

/// Names of the families.
#[derive(Debug)]
struct Names {
    project_total: String,
    project_repo_total: String,
    project_artifact_total: String,
    project_member_total: String,
    project_quota_usage_byte: String,
    artifact_pulled: String,
    up: String,
}

/// The gauges and what they are computed from.
#[derive(Debug, Clone)]
pub(crate) struct ExporterGauges {
    pool: SqlitePool,
    storage: Storage,
    gc: GcQueue,
    recorder: RecorderRef,
    names: Arc<Names>,
    /// Series set by earlier scrapes: those that vanish (a deleted project) are set to 0.
    seen: Arc<Mutex<BTreeSet<Series>>>,
}

impl ExporterGauges {
    /// Creates the pull table and registers the families under `?comp=exporter`.
    pub(crate) async fn new(
        telemetry: &Telemetry,
        state: &AppState,
    ) -> Result<(Self, PullCounter), sqlx::Error> {
        let pool = state.db.pool().clone();
        sqlx::query(PULL_SCHEMA).execute(&pool).await?;
        let ns = telemetry
            .config()
            .metric
            .namespace
            .clone()
            .filter(|ns| !ns.is_empty())
            .unwrap_or_else(|| "harbor".to_owned());
        let names = Names {
            project_total: format!("{ns}_project_total"),
            project_repo_total: format!("{ns}_project_repo_total"),
            project_artifact_total: format!("{ns}_project_artifact_total"),
            project_member_total: format!("{ns}_project_member_total"),
            project_quota_usage_byte: format!("{ns}_project_quota_usage_byte"),
            artifact_pulled: format!("{ns}_artifact_pulled"),
            up: format!("{ns}_up"),
        };
        let registry = telemetry.registry();
        let recorder = RecorderRef::from(registry);
        for (name, help) in [
            (
                &names.project_total,
                "The number of projects, by visibility.",
            ),
            (
                &names.project_repo_total,
                "The number of repositories of each project.",
            ),
            (
                &names.project_artifact_total,
                "The number of artifacts of each project.",
            ),
            (
                &names.project_member_total,
                "The number of members of each project.",
            ),
            (
                &names.project_quota_usage_byte,
                "The bytes of the distinct blobs (layers, configs) the manifests of each project refer to.",
            ),
            (
                &names.artifact_pulled,
                "The number of pulls (manifest GETs) of each repository.",
            ),
            (
                &names.up,
                "Whether each component is up (1) or down (0): core, database, jobservice, registry.",
            ),
        ] {
            recorder.describe(&Family::gauge(name.clone(), help));
        }
        registry.register_component(
            COMPONENT,
            [
                &names.project_total,
                &names.project_repo_total,
                &names.project_artifact_total,
                &names.project_member_total,
                &names.project_quota_usage_byte,
                &names.artifact_pulled,
                &names.up,
            ],
        );
        let pulls = PullCounter { pool: pool.clone() };
        let gauges = Self {
            pool,
            storage: state.storage.clone(),
            gc: state.gc.clone(),
            recorder,
            names: Arc::new(names),
            seen: Arc::default(),
        };
        Ok((gauges, pulls))
    }

    /// The refresh before a scrape of `components` (empty: everything): the queries run only
    /// when the scrape asks for everything or for `exporter`.
    pub(crate) fn refresh_for(
        &self,
        components: &[&str],
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send + 'static {
        let wanted = components.is_empty() || components.contains(&COMPONENT);
        let gauges = self.clone();
        async move {
            if wanted {
                gauges.refresh().await
            } else {
                Ok(())
            }
        }
    }

    /// Sets `{ns}_up`, then runs the queries and sets the other gauges (left as they were
    /// when the database fails).
    async fn refresh(&self) -> Result<(), sqlx::Error> {
        let database = sqlx::query("SELECT 1").execute(&self.pool).await;
        let components = [
            ("core", true),
            ("database", database.is_ok()),
            ("jobservice", self.gc.worker_alive()),
            ("registry", self.storage.is_available().await),
        ];
        for (component, up) in components {
            let labels = [("component".to_owned(), component.to_owned())];
            self.gauge(&self.names.up, &labels)
                .set(if up { 1.0 } else { 0.0 });
        }
        database?;
        self.refresh_database().await
    }

    /// The gauges computed from the database.
    async fn refresh_database(&self) -> Result<(), sqlx::Error> {
        let names = &self.names;
        let mut values: Vec<Sample> = Vec::new();
        let public = |p: bool| if p { "true" } else { "false" }.to_owned();

        let by_visibility: Vec<(bool, i64)> =
            sqlx::query_as("SELECT public != 0, COUNT(*) FROM project GROUP BY public != 0")
                .fetch_all(&self.pool)
                .await?;
        for p in [false, true] {
            let count = by_visibility
                .iter()
                .find(|(v, _)| *v == p)
                .map_or(0, |(_, c)| *c);
            values.push((
                names.project_total.clone(),
                vec![("public".to_owned(), public(p))],
                count as f64,
            ));
        }

        let projects: Vec<(String, bool, i64, i64, i64, i64)> =
            sqlx::query_as(PROJECTS).fetch_all(&self.pool).await?;
        for (name, p, repos, artifacts, members, usage) in projects {
            values.push((
                names.project_member_total.clone(),
                vec![("project_name".to_owned(), name.clone())],
                members as f64,
            ));
            values.push((
                names.project_quota_usage_byte.clone(),
                vec![("project_name".to_owned(), name.clone())],
                usage as f64,
            ));
            values.push((
                names.project_repo_total.clone(),
                vec![
                    ("project_name".to_owned(), name.clone()),
                    ("public".to_owned(), public(p)),
                ],
                repos as f64,
            ));
            values.push((
                names.project_artifact_total.clone(),
                vec![("project_name".to_owned(), name)],
                artifacts as f64,
            ));
        }

        let pulled: Vec<(String, i64)> = sqlx::query_as("SELECT name, count FROM artifact_pull")
            .fetch_all(&self.pool)
            .await?;
        for (name, count) in pulled {
            values.push((
                names.artifact_pulled.clone(),
                vec![("name".to_owned(), name)],
                count as f64,
            ));
        }

        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let now: BTreeSet<_> = values
            .iter()
            .map(|(n, l, _)| (n.clone(), l.clone()))
            .collect();
        for gone in seen.difference(&now) {
            self.gauge(&gone.0, &gone.1).set(0.0);
        }
        for (name, labels, value) in &values {
            self.gauge(name, labels).set(*value);
        }
        seen.extend(now);
        Ok(())
    }

    fn gauge(&self, name: &str, labels: &[(String, String)]) -> metrics::Gauge {
        let labels = labels
            .iter()
            .map(|(k, v)| Label::new(k.clone(), v.clone()))
            .collect::<Vec<_>>();
        self.recorder
            .gauge(&Key::from_parts(name.to_owned(), labels))
    }
}
