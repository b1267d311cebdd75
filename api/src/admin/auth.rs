//! Who may call the admin API: the bearer token becomes an [`Admin`] — an actor, an access
//! level and an optional tenant scope — and every handler checks it first.
//!
//! * Roles (the `roles` claim): `roster:read` reads, `roster:write` reads and writes; a token
//!   with neither is valid but may do nothing (403).
//! * A `tenant` claim confines the token to that tenant (the platform UI acting for a tenant
//!   admin). Another tenant answers 403 whether or not it exists, so a scoped token cannot
//!   probe for slugs. Service-level actions — creating, suspending, resuming and deleting
//!   tenants, and changing a tenant's rate limit — need an unscoped token, so a tenant admin
//!   cannot lift a suspension or a limit an operator set.

use std::ops::Deref;
use std::sync::Arc;

use poem::Request;
use poem_openapi::auth::Bearer;
use poem_openapi::SecurityScheme;

use super::error::AdminError;
use super::token::Claims;
use crate::state::AppState;
use crate::telemetry::RequestContext;

/// The role that grants reading.
pub const READ_ROLE: &str = "roster:read";
/// The role that grants reading and writing.
pub const WRITE_ROLE: &str = "roster:write";

/// What a token may do; `Write` includes `Read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    Read,
    Write,
}

impl Access {
    /// The strongest access the roles grant, if any.
    pub fn granted_by(roles: &[String]) -> Option<Access> {
        if roles.iter().any(|role| role == WRITE_ROLE) {
            Some(Access::Write)
        } else if roles.iter().any(|role| role == READ_ROLE) {
            Some(Access::Read)
        } else {
            None
        }
    }

    /// The role a token needs for this access.
    pub fn role(self) -> &'static str {
        match self {
            Access::Read => READ_ROLE,
            Access::Write => WRITE_ROLE,
        }
    }
}

/// An authenticated admin caller.
#[derive(Debug, Clone)]
pub struct Admin {
    /// The token's `sub`, recorded as the actor of every change.
    pub actor: String,
    pub access: Option<Access>,
    /// The slug of the one tenant a scoped token may see and change.
    pub scope: Option<String>,
    context: Arc<RequestContext>,
}

impl Admin {
    pub fn new(claims: Claims, context: Arc<RequestContext>) -> Self {
        Admin {
            access: Access::granted_by(&claims.roles),
            actor: claims.sub,
            scope: claims.tenant,
            context,
        }
    }

    /// Permits `needed` on the tenant `slug`, or refuses with 403.
    pub fn authorize(&self, needed: Access, slug: &str) -> Result<(), AdminError> {
        self.require(needed)?;
        if self.scope.as_deref().is_some_and(|scope| scope != slug) {
            return Err(AdminError::Forbidden(
                "this token is scoped to another tenant".to_owned(),
            ));
        }
        self.context.set_tenant(slug);
        Ok(())
    }

    /// Permits `needed` on the service as a whole (unscoped tokens only), or refuses with 403.
    pub fn authorize_service(&self, needed: Access) -> Result<(), AdminError> {
        self.require(needed)?;
        if self.scope.is_some() {
            return Err(AdminError::Forbidden(
                "this action needs a token that is not scoped to a tenant".to_owned(),
            ));
        }
        Ok(())
    }

    /// Permits a listing across tenants and returns the tenant it is confined to, if any.
    pub fn authorize_listing(&self, needed: Access) -> Result<Option<&str>, AdminError> {
        self.require(needed)?;
        if let Some(scope) = &self.scope {
            self.context.set_tenant(scope);
        }
        Ok(self.scope.as_deref())
    }

    fn require(&self, needed: Access) -> Result<(), AdminError> {
        match self.access {
            Some(granted) if granted >= needed => Ok(()),
            _ => Err(AdminError::Forbidden(format!(
                "this action needs the {} role",
                needed.role()
            ))),
        }
    }
}

/// A JWT bearer token for the admin API.
///
/// Signed with the HS256 secret (development), one of the RS256/ES256 public keys, or a key
/// from the JWKS URL; issued by the configured issuer for the configured audience, with `exp`
/// (and, when present, `nbf`) checked with a small leeway. Claims: `sub` (recorded as the
/// actor), `roles` (`roster:read` or `roster:write`) and optionally `tenant`, a slug the token
/// is confined to. `roster admin-token` mints development tokens.
#[derive(SecurityScheme)]
#[oai(
    rename = "AdminToken",
    ty = "bearer",
    bearer_format = "JWT",
    checker = "admin_from_token"
)]
pub struct AdminToken(Admin);

impl Deref for AdminToken {
    type Target = Admin;

    fn deref(&self) -> &Admin {
        &self.0
    }
}

async fn admin_from_token(req: &Request, bearer: Bearer) -> poem::Result<Admin> {
    let state = req
        .data::<AppState>()
        .ok_or_else(|| AdminError::internal("AppState missing from the request"))?;
    let claims = state
        .admin_tokens
        .verify(&bearer.token)
        .await
        .map_err(AdminError::from)?;
    Ok(Admin::new(claims, RequestContext::of(req)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(roles: &[&str], scope: Option<&str>) -> Admin {
        let claims = Claims {
            sub: "support@example.com".to_owned(),
            roles: roles.iter().map(|role| (*role).to_owned()).collect(),
            tenant: scope.map(str::to_owned),
        };
        Admin::new(claims, RequestContext::of(&Request::default()))
    }

    #[test]
    fn write_includes_read_and_unknown_roles_grant_nothing() {
        let writer = admin(&[WRITE_ROLE], None);
        let reader = admin(&["other", READ_ROLE], None);
        let nobody = admin(&["roster:admin"], None);

        assert!(writer.authorize(Access::Read, "acme").is_ok());
        assert!(writer.authorize(Access::Write, "acme").is_ok());
        assert!(reader.authorize(Access::Read, "acme").is_ok());
        assert!(matches!(
            reader.authorize(Access::Write, "acme"),
            Err(AdminError::Forbidden(_))
        ));
        assert!(nobody.authorize(Access::Read, "acme").is_err());
    }

    #[test]
    fn scoped_tokens_reach_only_their_tenant() {
        let scoped = admin(&[WRITE_ROLE], Some("acme"));

        assert!(scoped.authorize(Access::Write, "acme").is_ok());
        assert!(scoped.authorize(Access::Read, "globex").is_err());
        assert!(scoped.authorize_service(Access::Write).is_err());
        assert_eq!(
            scoped.authorize_listing(Access::Read).unwrap(),
            Some("acme")
        );
    }

    #[test]
    fn unscoped_tokens_reach_the_service() {
        let operator = admin(&[WRITE_ROLE], None);

        assert!(operator.authorize_service(Access::Write).is_ok());
        assert_eq!(operator.authorize_listing(Access::Read).unwrap(), None);
    }
}
