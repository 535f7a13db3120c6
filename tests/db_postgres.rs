//! Transaction spans and `metric.naming: otel` metrics against a real PostgreSQL: a failing
//! statement's SQLSTATE on the span and on `db_client_operation_duration_seconds`, with
//! `db.system.name="postgresql"` and `db.namespace` the database's name.
//!
//! Needs `TOWERSCOPE_TEST_POSTGRES_URL` (`.ci/run` starts a throwaway cluster and sets it;
//! locally e.g. `postgres://postgres@127.0.0.1:5432/towerscope_test`); without it the test
//! is skipped, unless `CI` is set: then it fails.
#![cfg(feature = "sqlx")]

mod support;

use opentelemetry::trace::Status;
use opentelemetry_sdk::trace::SpanData;
use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    PgPool,
};
use towerscope::db::{TraceResult, Transactions};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

const CONFIG: &str = "metric: { namespace: harbor, subsystem: core, naming: otel }
trace: { enabled: true, service_name: db-postgres-test, otel: { endpoint: '127.0.0.1:1' } }";

/// The URL of the test database, or `None` with a skip message. With `CI` set, a missing URL
/// is a failure: CI starts PostgreSQL.
fn postgres_url() -> Option<String> {
    match std::env::var("TOWERSCOPE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "TOWERSCOPE_TEST_POSTGRES_URL is required in CI: .ci/run starts PostgreSQL"
            );
            eprintln!(
                "TOWERSCOPE_TEST_POSTGRES_URL not set: skipping (see .ci/postgres.sh to start a \
                 throwaway cluster)"
            );
            None
        }
    }
}

/// A table of this run's own, so that runs against a shared database do not meet.
fn table_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    format!("towerscope_project_{}_{nanos}", std::process::id())
}

/// A statement naming this run's table: the name is ours ([`table_name`]), no input.
fn sql(statement: String) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(statement)
}

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

/// Inserts `name` into `table` in a transaction `createProject` that commits unless the
/// insert failed; a failed insert is recorded on the span, then a second statement, refused
/// by PostgreSQL with `25P02` because the transaction is aborted, is recorded too.
async fn create_project(
    txs: &Transactions,
    pool: &PgPool,
    table: &str,
    name: &str,
) -> Result<(), sqlx::Error> {
    let mut tx = txs.begin(pool, "createProject").await?;
    let insert = sql(format!("INSERT INTO {table} (name) VALUES ($1)"));
    let inserted = sqlx::query(insert)
        .bind(name)
        .execute(&mut *tx)
        .await
        .traced(&tx);
    match inserted {
        Ok(_) => tx.commit().await,
        Err(error) => {
            let aborted = sqlx::query("SELECT 1").execute(&mut *tx).await.traced(&tx);
            let code = aborted.err().and_then(|e| {
                e.as_database_error()
                    .and_then(|db| db.code().map(|c| c.into_owned()))
            });
            assert_eq!(code.as_deref(), Some("25P02"));
            tx.rollback().await?;
            Err(error)
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_unique_violation_marks_the_span_and_the_otel_duration_with_its_sqlstate() {
    let Some(url) = postgres_url() else { return };
    let options: PgConnectOptions = url.parse().expect("TOWERSCOPE_TEST_POSTGRES_URL");
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .expect("connect to TOWERSCOPE_TEST_POSTGRES_URL");
    let (database,): (String,) = sqlx::query_as("SELECT current_database()")
        .fetch_one(&pool)
        .await
        .unwrap();
    let table = table_name();
    sqlx::query(sql(format!("CREATE TABLE {table} (name TEXT PRIMARY KEY)")))
        .execute(&pool)
        .await
        .unwrap();

    let (t, exporter) = support::in_memory_telemetry(CONFIG);
    let namespace = pool
        .connect_options()
        .get_database()
        .unwrap_or("")
        .to_owned();
    let txs = Transactions::from_telemetry(&t).with_namespace(&namespace);
    let subscriber = tracing_subscriber::registry().with(t.tracing_layer());
    let guard = tracing::subscriber::set_default(subscriber);
    let server = tracing::info_span!("server", otel.name = "POST /projects", otel.kind = "server");
    let (first, second, rolled_back) = async {
        let first = create_project(&txs, &pool, &table, "library").await;
        let second = create_project(&txs, &pool, &table, "library").await;
        let mut tx = txs.begin(&pool, "deleteProject").await.unwrap();
        sqlx::query(sql(format!("DELETE FROM {table}")))
            .execute(&mut *tx)
            .await
            .traced(&tx)
            .unwrap();
        (first, second, tx.rollback().await)
    }
    .instrument(server.clone())
    .await;
    drop(server);
    drop(guard);
    sqlx::query(sql(format!("DROP TABLE {table}")))
        .execute(&pool)
        .await
        .unwrap();

    first.unwrap();
    rolled_back.unwrap();
    let error = second.unwrap_err();
    let code = error.as_database_error().and_then(|db| db.code());
    assert_eq!(code.as_deref(), Some("23505"), "{error:?}");

    t.trace_pipeline().unwrap().force_flush().unwrap();
    assert_spans(&exporter.get_finished_spans().unwrap(), &database);
    assert_metrics(&t.registry().render_components(&["db"]).unwrap(), &database);
}

/// The two `tx-createProject` spans: committed, and failed with 23505 then rolled back.
fn assert_spans(spans: &[SpanData], database: &str) {
    let creates: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.name == "tx-createProject")
        .collect();
    assert_eq!(creates.len(), 2, "{spans:?}");
    for span in &creates {
        assert_eq!(attr(span, "db.system.name").as_deref(), Some("postgresql"));
        assert_eq!(attr(span, "db.namespace").as_deref(), Some(database));
    }
    let (ok, failed) = (creates[0], creates[1]);
    assert_eq!(attr(ok, "outcome").as_deref(), Some("commit"));
    assert_eq!(ok.status, Status::Unset);
    assert_eq!(attr(ok, "error.type"), None);
    // The first failure stays on the span; the 25P02 after it only adds its event.
    assert_eq!(attr(failed, "outcome").as_deref(), Some("rollback"));
    assert!(matches!(failed.status, Status::Error { .. }), "{failed:?}");
    assert_eq!(attr(failed, "error.type").as_deref(), Some("23505"));
    assert_eq!(
        attr(failed, "db.response.status_code").as_deref(),
        Some("23505")
    );
    let events: Vec<&str> = failed.events.iter().map(|e| e.name.as_ref()).collect();
    assert_eq!(events, ["statement_failed", "statement_failed", "rollback"]);
}

/// The durations of the three transactions, by the conventions' attributes.
fn assert_metrics(text: &str, database: &str) {
    let family = "db_client_operation_duration_seconds";
    let ns = format!("db_namespace=\"{database}\"");
    for series in [
        format!(
            "{family}_count{{{ns},db_operation_name=\"createProject\",db_system_name=\"postgresql\"}} 1"
        ),
        format!(
            "{family}_count{{{ns},db_operation_name=\"createProject\",db_response_status_code=\"23505\",db_system_name=\"postgresql\",error_type=\"23505\"}} 1"
        ),
        format!(
            "{family}_count{{{ns},db_operation_name=\"deleteProject\",db_system_name=\"postgresql\"}} 1"
        ),
        // The conventions' advised buckets.
        format!(
            "{family}_bucket{{{ns},db_operation_name=\"deleteProject\",db_system_name=\"postgresql\",le=\"0.001\"}}"
        ),
    ] {
        assert!(text.contains(&series), "no {series} in\n{text}");
    }
    assert!(!text.contains("db_transaction_total"), "{text}");
    assert!(
        text.contains("harbor_core_db_transaction_operation_overflow_total 0"),
        "{text}"
    );
}
