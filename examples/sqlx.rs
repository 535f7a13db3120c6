//! Run with: cargo run --example sqlx
//!
//! Two named transactions on an in-memory SQLite database through `Transactions`: one commits,
//! one rolls back. Each is a `tx-<operation>` span (a child of the current request's span in a
//! service) and is counted; printed are the rows left and the `db_transaction_*` families, as
//! `/metrics?comp=db` would serve them. Look at the `outcome` label: `commit`, `rollback`,
//! `rollback_on_drop` (dropped without either) or `error`.

use sqlx::sqlite::SqlitePoolOptions;
use towerscope::{db::Transactions, Config, Telemetry};

const INSERT_PROJECT: &str = "INSERT INTO project (name) VALUES (?)";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::from_yaml_str("metric: { namespace: demo, subsystem: core }")?;
    let telemetry = Telemetry::init_local(&config)?;
    let transactions = Transactions::from_telemetry(&telemetry);

    // Every connection to `sqlite::memory:` is a database of its own: keep exactly one.
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await?;
    sqlx::query("CREATE TABLE project (name TEXT NOT NULL UNIQUE)")
        .execute(&pool)
        .await?;

    // Queries run on the traced transaction as on a `sqlx::Transaction`.
    let mut tx = transactions.begin(&pool, "createProject").await?;
    sqlx::query(INSERT_PROJECT)
        .bind("library")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;

    let mut tx = transactions.begin(&pool, "importProjects").await?;
    sqlx::query(INSERT_PROJECT)
        .bind("imported")
        .execute(&mut *tx)
        .await?;
    tx.rollback().await?;

    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM project ORDER BY name")
        .fetch_all(&pool)
        .await?;
    println!("projects after commit and rollback: {names:?}\n");

    println!("{}", telemetry.registry().render_components(&["db"])?);
    Ok(())
}
