//! The registry's metadata in SQLite through sqlx: projects, repositories, manifests, tags,
//! blobs and GC runs. Every write runs in a traced transaction (`tx-<operation>` spans, and
//! the `db_transaction_*` metrics).

use std::str::FromStr;

use sqlx::{
    sqlite::{SqliteConnectOptions, SqlitePoolOptions},
    SqlitePool,
};
use towerscope::db::Transactions;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS project (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    public INTEGER NOT NULL DEFAULT 0,
    creation_time TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE TABLE IF NOT EXISTS repository (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    project_id INTEGER NOT NULL REFERENCES project(id),
    creation_time TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE TABLE IF NOT EXISTS blob (
    digest TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    creation_time TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE TABLE IF NOT EXISTS manifest (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    repository_id INTEGER NOT NULL REFERENCES repository(id),
    digest TEXT NOT NULL,
    media_type TEXT NOT NULL,
    content BLOB NOT NULL,
    push_time TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    subject TEXT,
    artifact_type TEXT,
    UNIQUE (repository_id, digest)
);
CREATE INDEX IF NOT EXISTS manifest_subject ON manifest (repository_id, subject);
CREATE TABLE IF NOT EXISTS tag (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    repository_id INTEGER NOT NULL REFERENCES repository(id),
    name TEXT NOT NULL,
    digest TEXT NOT NULL,
    push_time TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (repository_id, name)
);
CREATE TABLE IF NOT EXISTS project_member (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id INTEGER NOT NULL REFERENCES project(id) ON DELETE CASCADE,
    entity_name TEXT NOT NULL,
    entity_type TEXT NOT NULL DEFAULT 'u',
    role_id INTEGER NOT NULL,
    creation_time TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (project_id, entity_type, entity_name)
);
CREATE TABLE IF NOT EXISTS gc_run (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    status TEXT NOT NULL,
    schedule_type TEXT NOT NULL,
    deleted_blobs INTEGER NOT NULL DEFAULT 0,
    freed_bytes INTEGER NOT NULL DEFAULT 0,
    creation_time TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    update_time TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
"#;

/// The project query, with its repository count, followed by `$tail`.
macro_rules! project_select {
    ($tail:literal) => {
        concat!(
            "SELECT p.id, p.name, p.public, p.creation_time, ",
            "(SELECT COUNT(*) FROM repository r WHERE r.project_id = p.id) AS repo_count ",
            "FROM project p",
            $tail
        )
    };
}

/// A project row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct Project {
    pub(crate) id: i64,
    pub(crate) name: String,
    pub(crate) public: bool,
    pub(crate) creation_time: String,
    pub(crate) repo_count: i64,
}

/// A repository row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct Repository {
    pub(crate) id: i64,
    pub(crate) project_id: i64,
    pub(crate) name: String,
    pub(crate) creation_time: String,
    pub(crate) artifact_count: i64,
}

/// A manifest (artifact) row, without its content.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct Artifact {
    pub(crate) id: i64,
    pub(crate) repository_id: i64,
    pub(crate) digest: String,
    pub(crate) media_type: String,
    pub(crate) size: i64,
    pub(crate) push_time: String,
}

/// A manifest to store.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewManifest<'a> {
    pub(crate) repository: &'a str,
    pub(crate) digest: &'a str,
    pub(crate) media_type: &'a str,
    pub(crate) content: &'a [u8],
    /// The tags to point at it.
    pub(crate) tags: &'a [&'a str],
    /// The digest in its `subject` (OCI 1.1).
    pub(crate) subject: Option<&'a str>,
    pub(crate) artifact_type: Option<&'a str>,
    /// The blobs that must be stored for it to be accepted, checked in its transaction (so a
    /// blob `DELETE` cannot slip between the check and the insert).
    pub(crate) blobs: &'a [&'a str],
}

/// A manifest that refers to blob `?1`, as its config, a layer, or an entry of `blobs` (what
/// `registry::referenced_blobs` reads), with its repository. `instr` skips the JSON parsing of
/// the manifests that do not contain the digest at all.
const REFERRING_MANIFEST: &str = "\
    SELECT r.name, m.digest FROM manifest m JOIN repository r ON r.id = m.repository_id \
    WHERE instr(CAST(m.content AS TEXT), ?1) > 0 AND json_valid(CAST(m.content AS TEXT)) AND ( \
      json_extract(CAST(m.content AS TEXT), '$.config.digest') = ?1 \
      OR EXISTS (SELECT 1 FROM json_each(CAST(m.content AS TEXT), '$.layers') l \
        WHERE json_extract(l.value, '$.digest') = ?1) \
      OR EXISTS (SELECT 1 FROM json_each(CAST(m.content AS TEXT), '$.blobs') b \
        WHERE json_extract(b.value, '$.digest') = ?1)) \
    ORDER BY r.name, m.digest LIMIT 1";

/// What a blob delete did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BlobDeletion {
    /// The row is gone (remove the file next); `size` bytes freed.
    Deleted { size: i64 },
    /// No such blob.
    Unknown,
    /// Kept: `repository@manifest` refers to it.
    Referenced {
        repository: String,
        manifest: String,
    },
}

/// Why a manifest was not stored.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PutManifestError {
    /// One of its [`NewManifest::blobs`] is not stored: push it first.
    #[error("blob unknown to registry: {0}")]
    BlobUnknown(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// A manifest that refers to another through its `subject`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct Referrer {
    pub(crate) digest: String,
    pub(crate) media_type: String,
    pub(crate) size: i64,
    pub(crate) artifact_type: Option<String>,
    pub(crate) content: Vec<u8>,
}

/// Adds the `subject` and `artifact_type` columns to a `manifest` table created by an
/// earlier version of the demo (new tables have them).
async fn add_manifest_columns(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info('manifest')")
        .fetch_all(pool)
        .await?;
    if columns.is_empty() {
        return Ok(()); // a new database: SCHEMA creates the table whole
    }
    for (column, alter) in [
        ("subject", "ALTER TABLE manifest ADD COLUMN subject TEXT"),
        (
            "artifact_type",
            "ALTER TABLE manifest ADD COLUMN artifact_type TEXT",
        ),
    ] {
        if !columns.iter().any(|c| c == column) {
            sqlx::raw_sql(alter).execute(pool).await?;
        }
    }
    Ok(())
}

/// A tag row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct Tag {
    pub(crate) id: i64,
    pub(crate) repository_id: i64,
    pub(crate) name: String,
    pub(crate) push_time: String,
}

/// A GC run row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct GcRun {
    pub(crate) id: i64,
    pub(crate) status: String,
    pub(crate) schedule_type: String,
    pub(crate) deleted_blobs: i64,
    pub(crate) freed_bytes: i64,
    pub(crate) creation_time: String,
    pub(crate) update_time: String,
}

/// A project member row (Harbor's roles: 1 projectAdmin, 2 developer, 3 guest, 4 maintainer,
/// 5 limitedGuest).
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct Member {
    pub(crate) id: i64,
    pub(crate) project_id: i64,
    pub(crate) entity_name: String,
    pub(crate) entity_type: String,
    pub(crate) role_id: i64,
    pub(crate) creation_time: String,
}

/// The demo has no users: every request acts as `admin`, who becomes each new project's
/// first member (projectAdmin), as Harbor makes a project's creator.
pub(crate) const CREATOR: &str = "admin";

/// Why a project cannot be created or deleted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProjectError {
    #[error("the project already exists")]
    Conflict,
    #[error("the project still has repositories")]
    NotEmpty,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// The id of `repository`, created (with its project) if new, in transaction `t`.
async fn ensure_repository(
    t: &mut sqlx::SqliteConnection,
    repository: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query("INSERT OR IGNORE INTO project (name) VALUES (?)")
        .bind(project_of(repository))
        .execute(&mut *t)
        .await?;
    sqlx::query(
        "INSERT OR IGNORE INTO repository (name, project_id) \
         SELECT ?, id FROM project WHERE name = ?",
    )
    .bind(repository)
    .bind(project_of(repository))
    .execute(&mut *t)
    .await?;
    sqlx::query_scalar("SELECT id FROM repository WHERE name = ?")
        .bind(repository)
        .fetch_one(&mut *t)
        .await
}

/// The database.
#[derive(Debug, Clone)]
pub(crate) struct Db {
    pool: SqlitePool,
    tx: Transactions,
}

/// The project of a repository: its first path segment.
pub(crate) fn project_of(repository: &str) -> &str {
    repository.split('/').next().unwrap_or(repository)
}

impl Db {
    /// Connects (creating the file if needed) and creates the schema and the `library` project.
    pub(crate) async fn connect(url: &str, tx: Transactions) -> Result<Self, sqlx::Error> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        add_manifest_columns(&pool).await?;
        sqlx::raw_sql(SCHEMA).execute(&pool).await?;
        let db = Self { pool, tx };
        let mut t = db.tx.begin(&db.pool, "initDatabase").await?;
        sqlx::query("INSERT OR IGNORE INTO project (name, public) VALUES ('library', 1)")
            .execute(&mut *t)
            .await?;
        // Every project has its creator as a member (databases of earlier demos included).
        sqlx::query(
            "INSERT OR IGNORE INTO project_member (project_id, entity_name, role_id) \
             SELECT id, ?, 1 FROM project",
        )
        .bind(CREATOR)
        .execute(&mut *t)
        .await?;
        t.commit().await?;
        Ok(db)
    }

    /// The connection pool (the exporter gauges query it at scrape time).
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes the pool.
    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }

    // ---- blobs ----

    /// Records a stored blob.
    pub(crate) async fn put_blob(&self, digest: &str, size: u64) -> Result<(), sqlx::Error> {
        let mut t = self.tx.begin(&self.pool, "putBlob").await?;
        sqlx::query("INSERT OR REPLACE INTO blob (digest, size) VALUES (?, ?)")
            .bind(digest)
            .bind(size as i64)
            .execute(&mut *t)
            .await?;
        t.commit().await
    }

    /// The size of a known blob.
    pub(crate) async fn blob_size(&self, digest: &str) -> Result<Option<i64>, sqlx::Error> {
        sqlx::query_scalar("SELECT size FROM blob WHERE digest = ?")
            .bind(digest)
            .fetch_optional(&self.pool)
            .await
    }

    /// Every known blob with its size.
    pub(crate) async fn blobs(&self) -> Result<Vec<(String, i64)>, sqlx::Error> {
        sqlx::query_as("SELECT digest, size FROM blob ORDER BY digest")
            .fetch_all(&self.pool)
            .await
    }

    /// Forgets a blob unless a manifest (of any repository: blobs are global) refers to it.
    /// The check runs after the delete, in its transaction: SQLite's write lock is held, so
    /// no manifest referring to the blob can be stored in between (see
    /// [`NewManifest::blobs`]); a referenced blob's delete is rolled back.
    pub(crate) async fn delete_unreferenced_blob(
        &self,
        digest: &str,
    ) -> Result<BlobDeletion, sqlx::Error> {
        let mut t = self.tx.begin(&self.pool, "deleteBlob").await?;
        let size: Option<i64> =
            sqlx::query_scalar("DELETE FROM blob WHERE digest = ? RETURNING size")
                .bind(digest)
                .fetch_optional(&mut *t)
                .await?;
        let Some(size) = size else {
            t.commit().await?;
            return Ok(BlobDeletion::Unknown);
        };
        let referrer: Option<(String, String)> = sqlx::query_as(REFERRING_MANIFEST)
            .bind(digest)
            .fetch_optional(&mut *t)
            .await?;
        if let Some((repository, manifest)) = referrer {
            t.rollback().await?;
            return Ok(BlobDeletion::Referenced {
                repository,
                manifest,
            });
        }
        t.commit().await?;
        Ok(BlobDeletion::Deleted { size })
    }

    // ---- manifests ----

    /// Stores a manifest (creating its repository and project), and points its tags at it;
    /// refused (and nothing stored) if one of its required blobs is not stored.
    pub(crate) async fn put_manifest(&self, m: &NewManifest<'_>) -> Result<(), PutManifestError> {
        let mut t = self.tx.begin(&self.pool, "putManifest").await?;
        let repo_id = ensure_repository(&mut t, m.repository).await?;
        sqlx::query(
            "INSERT INTO manifest (repository_id, digest, media_type, content, subject, \
             artifact_type) VALUES (?, ?, ?, ?, ?, ?) \
             ON CONFLICT (repository_id, digest) DO UPDATE SET media_type = excluded.media_type, \
             content = excluded.content, subject = excluded.subject, \
             artifact_type = excluded.artifact_type",
        )
        .bind(repo_id)
        .bind(m.digest)
        .bind(m.media_type)
        .bind(m.content)
        .bind(m.subject)
        .bind(m.artifact_type)
        .execute(&mut *t)
        .await?;
        // Checked after the first write: the transaction holds SQLite's write lock, so no blob
        // can be deleted until it ends.
        for blob in m.blobs {
            let stored: Option<i64> = sqlx::query_scalar("SELECT 1 FROM blob WHERE digest = ?")
                .bind(blob)
                .fetch_optional(&mut *t)
                .await?;
            if stored.is_none() {
                t.rollback().await?;
                return Err(PutManifestError::BlobUnknown((*blob).to_owned()));
            }
        }
        for tag in m.tags {
            sqlx::query(
                "INSERT INTO tag (repository_id, name, digest) VALUES (?, ?, ?) \
                 ON CONFLICT (repository_id, name) DO UPDATE SET digest = excluded.digest, \
                 push_time = excluded.push_time",
            )
            .bind(repo_id)
            .bind(tag)
            .bind(m.digest)
            .execute(&mut *t)
            .await?;
        }
        Ok(t.commit().await?)
    }

    /// The manifests of `repository` whose `subject` is `digest` (OCI 1.1 referrers), by
    /// digest.
    pub(crate) async fn referrers(
        &self,
        repository: &str,
        digest: &str,
    ) -> Result<Vec<Referrer>, sqlx::Error> {
        sqlx::query_as(
            "SELECT m.digest, m.media_type, length(m.content) AS size, m.artifact_type, \
             m.content FROM manifest m JOIN repository r ON r.id = m.repository_id \
             WHERE r.name = ? AND m.subject = ? ORDER BY m.digest",
        )
        .bind(repository)
        .bind(digest)
        .fetch_all(&self.pool)
        .await
    }

    /// A manifest by tag or digest: `(digest, media type, content)`.
    pub(crate) async fn manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Option<(String, String, Vec<u8>)>, sqlx::Error> {
        sqlx::query_as(
            "SELECT m.digest, m.media_type, m.content FROM manifest m \
             JOIN repository r ON r.id = m.repository_id \
             WHERE r.name = ?1 AND (m.digest = ?2 OR m.digest = \
               (SELECT t.digest FROM tag t WHERE t.repository_id = r.id AND t.name = ?2))",
        )
        .bind(repository)
        .bind(reference)
        .fetch_optional(&self.pool)
        .await
    }

    /// Deletes a manifest by digest (with its tags), or a tag; `false` if unknown.
    pub(crate) async fn delete_manifest(
        &self,
        repository: &str,
        reference: &str,
        by_digest: bool,
    ) -> Result<bool, sqlx::Error> {
        let mut t = self.tx.begin(&self.pool, "deleteManifest").await?;
        let deleted = if by_digest {
            sqlx::query(
                "DELETE FROM tag WHERE digest = ?2 AND repository_id = \
                 (SELECT id FROM repository WHERE name = ?1)",
            )
            .bind(repository)
            .bind(reference)
            .execute(&mut *t)
            .await?;
            sqlx::query(
                "DELETE FROM manifest WHERE digest = ?2 AND repository_id = \
                 (SELECT id FROM repository WHERE name = ?1)",
            )
            .bind(repository)
            .bind(reference)
            .execute(&mut *t)
            .await?
            .rows_affected()
        } else {
            sqlx::query(
                "DELETE FROM tag WHERE name = ?2 AND repository_id = \
                 (SELECT id FROM repository WHERE name = ?1)",
            )
            .bind(repository)
            .bind(reference)
            .execute(&mut *t)
            .await?
            .rows_affected()
        };
        t.commit().await?;
        Ok(deleted > 0)
    }

    /// Every manifest's content (for GC).
    pub(crate) async fn all_manifest_contents(&self) -> Result<Vec<Vec<u8>>, sqlx::Error> {
        sqlx::query_scalar("SELECT content FROM manifest")
            .fetch_all(&self.pool)
            .await
    }

    /// Repository names in lexical order, after `last`, at most `n`.
    pub(crate) async fn catalog(
        &self,
        n: i64,
        last: Option<&str>,
    ) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT name FROM repository WHERE name > ? ORDER BY name LIMIT ?")
            .bind(last.unwrap_or(""))
            .bind(n)
            .fetch_all(&self.pool)
            .await
    }

    /// The tags of a repository, `None` if it does not exist.
    pub(crate) async fn tag_names(
        &self,
        repository: &str,
    ) -> Result<Option<Vec<String>>, sqlx::Error> {
        let id: Option<i64> = sqlx::query_scalar("SELECT id FROM repository WHERE name = ?")
            .bind(repository)
            .fetch_optional(&self.pool)
            .await?;
        let Some(id) = id else { return Ok(None) };
        sqlx::query_scalar("SELECT name FROM tag WHERE repository_id = ? ORDER BY name")
            .bind(id)
            .fetch_all(&self.pool)
            .await
            .map(Some)
    }

    // ---- core API ----

    /// Every project, by name.
    pub(crate) async fn projects(&self) -> Result<Vec<Project>, sqlx::Error> {
        sqlx::query_as(project_select!(" ORDER BY p.name"))
            .fetch_all(&self.pool)
            .await
    }

    /// A project by name or numeric id.
    pub(crate) async fn project(&self, name_or_id: &str) -> Result<Option<Project>, sqlx::Error> {
        match name_or_id.parse::<i64>() {
            Ok(id) => {
                sqlx::query_as(project_select!(" WHERE p.id = ?"))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
            }
            Err(_) => {
                sqlx::query_as(project_select!(" WHERE p.name = ?"))
                    .bind(name_or_id)
                    .fetch_optional(&self.pool)
                    .await
            }
        }
    }

    /// Creates a project; returns its id.
    pub(crate) async fn create_project(
        &self,
        name: &str,
        public: bool,
    ) -> Result<i64, ProjectError> {
        let mut t = self.tx.begin(&self.pool, "createProject").await?;
        let done = sqlx::query("INSERT OR IGNORE INTO project (name, public) VALUES (?, ?)")
            .bind(name)
            .bind(public)
            .execute(&mut *t)
            .await?;
        if done.rows_affected() == 0 {
            return Err(ProjectError::Conflict);
        }
        let id = done.last_insert_rowid();
        sqlx::query(
            "INSERT INTO project_member (project_id, entity_name, role_id) VALUES (?, ?, 1)",
        )
        .bind(id)
        .bind(CREATOR)
        .execute(&mut *t)
        .await?;
        t.commit().await?;
        Ok(id)
    }

    /// The members of a project, oldest first.
    pub(crate) async fn members(&self, project_id: i64) -> Result<Vec<Member>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, project_id, entity_name, entity_type, role_id, creation_time \
             FROM project_member WHERE project_id = ? ORDER BY id",
        )
        .bind(project_id)
        .fetch_all(&self.pool)
        .await
    }

    /// Adds user `name` to a project with `role_id`; `None` if already a member.
    pub(crate) async fn add_member(
        &self,
        project_id: i64,
        name: &str,
        role_id: i64,
    ) -> Result<Option<i64>, sqlx::Error> {
        let mut t = self.tx.begin(&self.pool, "createProjectMember").await?;
        let done = sqlx::query(
            "INSERT OR IGNORE INTO project_member (project_id, entity_name, role_id) VALUES (?, ?, ?)",
        )
        .bind(project_id)
        .bind(name)
        .bind(role_id)
        .execute(&mut *t)
        .await?;
        t.commit().await?;
        Ok((done.rows_affected() > 0).then(|| done.last_insert_rowid()))
    }

    /// Removes member `id` of a project; `false` if there is none.
    pub(crate) async fn delete_member(
        &self,
        project_id: i64,
        id: i64,
    ) -> Result<bool, sqlx::Error> {
        let mut t = self.tx.begin(&self.pool, "deleteProjectMember").await?;
        let done = sqlx::query("DELETE FROM project_member WHERE project_id = ? AND id = ?")
            .bind(project_id)
            .bind(id)
            .execute(&mut *t)
            .await?;
        t.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// Deletes an empty project; `false` if unknown.
    pub(crate) async fn delete_project(&self, id: i64) -> Result<bool, ProjectError> {
        let mut t = self.tx.begin(&self.pool, "deleteProject").await?;
        let repos: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM repository WHERE project_id = ?")
            .bind(id)
            .fetch_one(&mut *t)
            .await?;
        if repos > 0 {
            return Err(ProjectError::NotEmpty);
        }
        let done = sqlx::query("DELETE FROM project WHERE id = ?")
            .bind(id)
            .execute(&mut *t)
            .await?;
        t.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// The repositories of a project.
    pub(crate) async fn repositories(
        &self,
        project_id: i64,
    ) -> Result<Vec<Repository>, sqlx::Error> {
        sqlx::query_as(
            "SELECT r.id, r.project_id, r.name, r.creation_time, \
             (SELECT COUNT(*) FROM manifest m WHERE m.repository_id = r.id) AS artifact_count \
             FROM repository r WHERE r.project_id = ? ORDER BY r.name",
        )
        .bind(project_id)
        .fetch_all(&self.pool)
        .await
    }

    /// A repository by full name.
    pub(crate) async fn repository(&self, name: &str) -> Result<Option<Repository>, sqlx::Error> {
        sqlx::query_as(
            "SELECT r.id, r.project_id, r.name, r.creation_time, \
             (SELECT COUNT(*) FROM manifest m WHERE m.repository_id = r.id) AS artifact_count \
             FROM repository r WHERE r.name = ?",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await
    }

    /// The artifacts (manifests) of a repository, newest first.
    pub(crate) async fn artifacts(&self, repository_id: i64) -> Result<Vec<Artifact>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, repository_id, digest, media_type, LENGTH(content) AS size, push_time \
             FROM manifest WHERE repository_id = ? ORDER BY push_time DESC, id DESC",
        )
        .bind(repository_id)
        .fetch_all(&self.pool)
        .await
    }

    /// The tags of a repository pointing at `digest`.
    pub(crate) async fn tags_of(
        &self,
        repository_id: i64,
        digest: &str,
    ) -> Result<Vec<Tag>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, repository_id, name, push_time FROM tag \
             WHERE repository_id = ? AND digest = ? ORDER BY name",
        )
        .bind(repository_id)
        .bind(digest)
        .fetch_all(&self.pool)
        .await
    }

    /// The digest a reference (tag or digest) names in a repository.
    pub(crate) async fn resolve_reference(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Option<String>, sqlx::Error> {
        Ok(self.manifest(repository, reference).await?.map(|m| m.0))
    }

    // ---- GC runs ----

    /// Records a new GC run as `Pending`; returns its id.
    pub(crate) async fn create_gc_run(&self, schedule_type: &str) -> Result<i64, sqlx::Error> {
        let mut t = self.tx.begin(&self.pool, "createGCSchedule").await?;
        let id = sqlx::query("INSERT INTO gc_run (status, schedule_type) VALUES ('Pending', ?)")
            .bind(schedule_type)
            .execute(&mut *t)
            .await?
            .last_insert_rowid();
        t.commit().await?;
        Ok(id)
    }

    /// Updates a GC run's status and results.
    pub(crate) async fn update_gc_run(
        &self,
        id: i64,
        status: &str,
        deleted_blobs: i64,
        freed_bytes: i64,
    ) -> Result<(), sqlx::Error> {
        let mut t = self.tx.begin(&self.pool, "updateGCStatus").await?;
        sqlx::query(
            "UPDATE gc_run SET status = ?, deleted_blobs = ?, freed_bytes = ?, \
             update_time = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?",
        )
        .bind(status)
        .bind(deleted_blobs)
        .bind(freed_bytes)
        .bind(id)
        .execute(&mut *t)
        .await?;
        t.commit().await
    }

    /// GC runs, newest first.
    pub(crate) async fn gc_runs(&self) -> Result<Vec<GcRun>, sqlx::Error> {
        sqlx::query_as("SELECT * FROM gc_run ORDER BY id DESC")
            .fetch_all(&self.pool)
            .await
    }

    /// One GC run.
    pub(crate) async fn gc_run(&self, id: i64) -> Result<Option<GcRun>, sqlx::Error> {
        sqlx::query_as("SELECT * FROM gc_run WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
    }
}
