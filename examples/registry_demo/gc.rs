//! Garbage collection as an instrumented background job: deletes the blobs that no manifest
//! refers to (as config or layer).
//!
//! The job runs through [`Jobs::run`](towerscope::jobs::Jobs::run) with the
//! [`JobContext`] captured in the scheduling request, so its `run-job` span links to that
//! request, and it is counted in `task_total{type="GARBAGE_COLLECTION",status}`. Its status
//! (`Pending`, `Running`, `Success`, `Error`, Harbor's words) is kept in the `gc_run` table.
//!
//! Like Distribution's offline GC, it does not lock out pushes: a blob uploaded but not yet
//! referenced by its manifest when GC runs is deleted (the push then fails with
//! `MANIFEST_BLOB_UNKNOWN` and the client retries). Run it when the registry is quiet.

use std::collections::HashSet;

use towerscope::jobs::{JobContext, JobInfo};

use crate::{registry::referenced_blobs, storage::Digest, AppState};

/// The job name (Harbor's), the `type` label of the task metrics.
pub(crate) const GC_JOB: &str = "GARBAGE_COLLECTION";

/// What a GC run did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct GcReport {
    pub(crate) deleted_blobs: i64,
    pub(crate) freed_bytes: i64,
}

/// Why a GC run failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GcError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("storage: {0}")]
    Io(#[from] std::io::Error),
    #[error("a stored manifest cannot be parsed; nothing was deleted")]
    BadManifest,
}

/// Records a GC run and starts it in the background; returns the run's id. Call it inside the
/// scheduling request, so the job links to its span.
pub(crate) async fn schedule(state: &AppState, schedule_type: &str) -> Result<i64, sqlx::Error> {
    let id = state.db.create_gc_run(schedule_type).await?;
    let context = JobContext::capture();
    let info = JobInfo {
        id: id.to_string(),
        name: GC_JOB.to_owned(),
        periodic: false,
    };
    let job = state.jobs.run(info, context, run(state.clone(), id));
    tokio::spawn(job);
    Ok(id)
}

async fn run(state: AppState, id: i64) -> Result<GcReport, GcError> {
    state.db.update_gc_run(id, "Running", 0, 0).await?;
    let result = collect(&state).await;
    match &result {
        Ok(report) => {
            tracing::info!(
                gc.id = id,
                deleted_blobs = report.deleted_blobs,
                freed_bytes = report.freed_bytes,
                "garbage collection finished"
            );
            state
                .db
                .update_gc_run(id, "Success", report.deleted_blobs, report.freed_bytes)
                .await?;
        }
        Err(err) => {
            tracing::warn!(gc.id = id, error = %err, "garbage collection failed");
            state.db.update_gc_run(id, "Error", 0, 0).await?;
        }
    }
    result
}

async fn collect(state: &AppState) -> Result<GcReport, GcError> {
    let mut referenced = HashSet::new();
    for content in state.db.all_manifest_contents().await? {
        referenced.extend(referenced_blobs(&content).ok_or(GcError::BadManifest)?);
    }
    let mut report = GcReport::default();
    for (digest, size) in state.db.blobs().await? {
        if referenced.contains(&digest) {
            continue;
        }
        // The row goes first: a blob without a row is invisible, a row without a file is not.
        state.db.delete_blob(&digest).await?;
        if let Some(parsed) = Digest::parse(&digest) {
            state.storage.delete(&parsed).await?;
        }
        report.deleted_blobs += 1;
        report.freed_bytes += size;
    }
    Ok(report)
}
