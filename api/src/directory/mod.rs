//! The domain inside one tenant: users, groups, memberships, the Basic User safety net,
//! effective permissions and the journal. All SQL over tenant tables lives here: every function
//! takes a [`tenancy::scope::TenantDb`] and names each table through its schema (`{s}.users`).

pub mod groups;
pub mod journal;
pub mod listing;
pub mod provisioning;
pub mod safety_net;
pub mod users;

/// What can go wrong in the directory, and what the caller should answer.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// A unique attribute is taken (409 `uniqueness` on SCIM, 409 on the admin API).
    #[error("a {resource} with the same {attribute} already exists")]
    Conflict {
        resource: &'static str,
        attribute: &'static str,
    },

    /// Postgres failed; the caller logs it and answers 500 (or 503 when unreachable).
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Maps a unique-constraint violation to the attribute it protects.
pub(crate) fn conflict_of(error: &sqlx::Error) -> Option<DirectoryError> {
    let constraint = error.as_database_error()?.constraint()?;
    let (resource, attribute) = match constraint {
        "users_user_name_key" => ("user", "userName"),
        "users_work_email_key" => ("user", "work email"),
        "users_pkey" => ("user", "userName"),
        "groups_external_id_key" => ("group", "External Group ID"),
        _ => return None,
    };
    Some(DirectoryError::Conflict {
        resource,
        attribute,
    })
}
