//! Harbor-exporter-style gauges computed from the database at scrape time, under
//! `?comp=exporter` (and in the unfiltered output): `{ns}_project_total{public}`,
//! `{ns}_project_repo_total{project_name,public}`, `{ns}_project_artifact_total{project_name}`
//! and `{ns}_artifact_pulled{name}`, where `{ns}` is `metric.namespace` (default `harbor`).
//!
//! The SDK's [`MetricsEndpoint`] renders what the registry holds, so the metrics server here
//! wraps it: a scrape that asks for everything or for `exporter` first runs the queries and
//! sets the gauges, then the endpoint renders as usual. Pulls (manifest GETs answered 2xx) are
//! counted in the database, in the demo's own `artifact_pull` table.

use std::{
    collections::BTreeSet,
    io,
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
};

use axum::{
    body::Body,
    extract::{Request, State},
    response::Response,
    routing::any,
    Router,
};
use metrics::{Key, KeyName, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::PrometheusRecorder;
use sqlx::SqlitePool;
use towerscope::{metrics::MetricsEndpoint, Telemetry};

use crate::db::Db;

/// The `?comp=` component of these families.
pub(crate) const COMPONENT: &str = "exporter";

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

const PULL_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS artifact_pull (\
    name TEXT PRIMARY KEY, count INTEGER NOT NULL DEFAULT 0)";

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
    artifact_pulled: String,
}

/// The gauges and what they are computed from.
#[derive(Debug, Clone)]
pub(crate) struct ExporterGauges {
    pool: SqlitePool,
    recorder: Arc<PrometheusRecorder>,
    names: Arc<Names>,
    /// Series set by earlier scrapes: those that vanish (a deleted project) are set to 0.
    seen: Arc<Mutex<BTreeSet<Series>>>,
}

impl ExporterGauges {
    /// Creates the pull table and registers the families under `?comp=exporter`.
    pub(crate) async fn new(
        telemetry: &Telemetry,
        db: &Db,
    ) -> Result<(Self, PullCounter), sqlx::Error> {
        let pool = db.pool().clone();
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
            artifact_pulled: format!("{ns}_artifact_pulled"),
        };
        let registry = telemetry.registry();
        let recorder = registry.recorder();
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
                &names.artifact_pulled,
                "The number of pulls (manifest GETs) of each repository.",
            ),
        ] {
            recorder.describe_gauge(KeyName::from(name.clone()), None, help.into());
        }
        registry.register_component(
            COMPONENT,
            [
                &names.project_total,
                &names.project_repo_total,
                &names.project_artifact_total,
                &names.artifact_pulled,
            ],
        );
        let pulls = PullCounter { pool: pool.clone() };
        let gauges = Self {
            pool,
            recorder,
            names: Arc::new(names),
            seen: Arc::default(),
        };
        Ok((gauges, pulls))
    }

    /// Runs the queries and sets the gauges.
    pub(crate) async fn refresh(&self) -> Result<(), sqlx::Error> {
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

        let projects: Vec<(String, bool, i64, i64)> = sqlx::query_as(
            "SELECT p.name, p.public != 0, \
               (SELECT COUNT(*) FROM repository r WHERE r.project_id = p.id), \
               (SELECT COUNT(*) FROM manifest m JOIN repository r ON r.id = m.repository_id \
                 WHERE r.project_id = p.id) \
             FROM project p",
        )
        .fetch_all(&self.pool)
        .await?;
        for (name, p, repos, artifacts) in projects {
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
            .register_gauge(&Key::from_parts(name.to_owned(), labels), &METADATA)
    }
}

/// Whether a scrape asks for the exporter gauges: no `comp`, or `comp=exporter`.
fn wants_exporter(query: Option<&str>) -> bool {
    let comps: Vec<&str> = query
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.strip_prefix("comp="))
        .filter(|v| !v.is_empty())
        .collect();
    comps.is_empty() || comps.contains(&COMPONENT)
}

#[derive(Debug, Clone)]
struct Scrape {
    endpoint: MetricsEndpoint,
    gauges: ExporterGauges,
}

async fn scrape(State(scrape): State<Scrape>, req: Request) -> Response {
    if wants_exporter(req.uri().query()) {
        if let Err(err) = scrape.gauges.refresh().await {
            eprintln!("registry_demo: exporter gauges: {err}");
        }
    }
    match scrape.endpoint.respond(&req).await {
        Ok(res) => res.map(Body::new),
        Err(never) => match never {},
    }
}

/// The metrics server: the SDK's endpoint on `metric.path`, the gauges refreshed first.
#[derive(Debug)]
pub(crate) struct MetricsServer {
    local_addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsServer {
    /// Binds `metric.host:metric.port`; `None` when `metric.enabled` is false.
    pub(crate) async fn bind(
        telemetry: &Telemetry,
        gauges: ExporterGauges,
    ) -> io::Result<Option<Self>> {
        let config = &telemetry.config().metric;
        if !config.enabled {
            return Ok(None);
        }
        let listener = tokio::net::TcpListener::bind(config.socket_addr()).await?;
        let local_addr = listener.local_addr()?;
        let app = Router::new()
            .route(&config.path, any(scrape))
            .with_state(Scrape {
                endpoint: telemetry.metrics_endpoint(),
                gauges,
            });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Some(Self {
            local_addr,
            stop,
            task,
        }))
    }

    /// The address it listens on.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops it.
    pub(crate) async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}
