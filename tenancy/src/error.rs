use thiserror::Error;

/// Everything that can go wrong in the tenancy layer.
///
/// The variants above `Database` are caller mistakes and carry a message fit to show the caller;
/// the rest are internal and must be logged, not shown.
#[derive(Debug, Error)]
pub enum Error {
    /// A slug that does not match `[a-z0-9][a-z0-9-]{1,62}` or names a SCIM endpoint.
    #[error("invalid tenant slug {slug:?}: {reason}")]
    InvalidSlug { slug: String, reason: &'static str },

    /// Another tenant already uses the slug.
    #[error("a tenant with slug {0:?} already exists")]
    SlugTaken(String),

    /// No tenant has this slug or id.
    #[error("no tenant {0:?}")]
    UnknownTenant(String),

    /// A tenant name or service-account name that is empty or too long.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        field: &'static str,
        reason: &'static str,
    },

    /// No key of the tenant matches the given id or prefix.
    #[error("no key {0:?} for this tenant")]
    UnknownKey(String),

    /// The control schema is older than this build; `roster serve` refuses to start.
    #[error(
        "the control schema is at version {applied} but this build needs {required}: \
         run `roster migrate` first"
    )]
    ControlSchemaBehind { applied: i64, required: i64 },

    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),

    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl Error {
    /// True when Postgres is unreachable, restarting or out of pooled connections — a
    /// condition the caller answers with `503` and `Retry-After` rather than `500`.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Database(error) => is_unavailable(error),
            _ => false,
        }
    }
}

impl Error {
    /// True when Postgres refused a text value it cannot store (a NUL character, SQLSTATE
    /// 22021 or 22P05): the caller's input, answered with `400`, never `500`.
    pub fn is_unstorable_text(&self) -> bool {
        matches!(
            self,
            Error::Database(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("22021") | Some("22P05"))
        )
    }
}

/// Connection failures, pool exhaustion, and SQLSTATE classes 08 (connection exception) and
/// 57 (operator intervention: shutdown, restart, cannot connect now).
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(e) => e
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57")),
        _ => false,
    }
}
