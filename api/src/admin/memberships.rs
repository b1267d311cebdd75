//! `/admin/v1/tenants/{slug}/groups/{group_id}/members`: who is in a group, and the members
//! the platform manages by hand.
//!
//! Only groups that are not synced take members here. A synced group's membership belongs to
//! Entra (a change here would be undone by its next cycle), and Basic User's is kept by the
//! safety net; both answer 409 with a message saying so. Adding a user to a group that is not
//! synced does not move them in or out of Basic User — only synced groups count for the safety
//! net — but the directory restores the invariant for them in the same transaction anyway.

use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde_json::json;
use tenancy::tenants;
use uuid::Uuid;

use super::auth::{Access, AdminToken};
use super::error::{AdminError, AdminResult, Change, Conflicting};
use super::groups::{audit, group_error, require_counted};
use super::page;
use crate::directory::groups::{self, Member};
use crate::openapi::ApiTags;
use crate::state::AppState;

/// Most users one `addGroupMembers` call may name.
const MAX_ADD: usize = 1000;

pub struct MembershipsApi;

#[OpenApi(prefix_path = "/admin/v1", tag = "ApiTags::Memberships")]
impl MembershipsApi {
    /// List a group's members
    ///
    /// The group's members by user id, a page at a time, for any group (synced ones and Basic
    /// User included). Needs `roster:read`.
    #[oai(
        path = "/tenants/:slug/groups/:group_id/members",
        method = "get",
        operation_id = "listGroupMembers"
    )]
    async fn list_members(
        &self,
        admin: AdminToken,
        state: Data<&AppState>,
        slug: Path<String>,
        group_id: Path<Uuid>,
        /// Page size, 1 to 200 (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "200")))]
        limit: Query<Option<u32>>,
        /// The `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> AdminResult<Json<MemberPage>, Change> {
        admin.authorize(Access::Read, &slug)?;

        let after = parse_cursor(cursor.0.as_deref())?;
        let tenant = tenants::require_by_slug(state.db.control(), &slug).await?;

        let limit = page::limit(limit.0);
        let mut conn = tenancy::scope::read(&state.db, &tenant.schema).await?;
        require_counted(&mut conn.db(), group_id.0).await?;
        let rows =
            groups::members(&mut conn.db(), group_id.0, after, page::fetch_size(limit)).await?;
        conn.done();
        let (rows, next_cursor) = page::finish(rows, limit, |member| member.user_id.to_string());

        Ok(Json(MemberPage {
            items: rows.into_iter().map(MemberView::from).collect(),
            next_cursor,
        }))
    }

    /// Add members to a group
    ///
    /// Adds users to a group that is not synced; users already in it stay. Every id must be a
    /// user of the tenant, else nothing is added (400 naming the unknown ids). A synced group's
    /// members are managed by Entra and Basic User's by the safety net: both answer 409.
    /// Needs `roster:write`.
    #[oai(
        path = "/tenants/:slug/groups/:group_id/members",
        method = "post",
        operation_id = "addGroupMembers"
    )]
    async fn add_members(
        &self,
        admin: AdminToken,
        state: Data<&AppState>,
        slug: Path<String>,
        group_id: Path<Uuid>,
        body: Json<AddMembersRequest>,
    ) -> AdminResult<Json<MembersAdded>, Conflicting> {
        admin.authorize(Access::Write, &slug)?;

        let user_ids = body.0.validated()?;
        let tenant = tenants::require_by_slug(state.db.control(), &slug).await?;

        let mut tx = tenancy::scope::begin(&state.db, &tenant.schema).await?;
        let added =
            groups::add_platform_members(&mut tx.db(), group_id.0, &user_ids, admin.request_id())
                .await
                .map_err(group_error)?;
        let detail = json!({ "user_ids": user_ids, "added": added.len() });
        audit(
            &mut tx.db(),
            &admin,
            "group.members.add",
            &tenant,
            group_id.0,
            detail,
        )
        .await?;
        tx.commit().await?;

        Ok(Json(MembersAdded { added }))
    }

    /// Remove a member from a group
    ///
    /// Removes one user from a group that is not synced; 404 when they are not a member. A
    /// synced group's members are managed by Entra and Basic User's by the safety net: both
    /// answer 409. Needs `roster:write`.
    #[oai(
        path = "/tenants/:slug/groups/:group_id/members/:user_id",
        method = "delete",
        operation_id = "removeGroupMember"
    )]
    async fn remove_member(
        &self,
        admin: AdminToken,
        state: Data<&AppState>,
        slug: Path<String>,
        group_id: Path<Uuid>,
        user_id: Path<Uuid>,
    ) -> AdminResult<MemberRemoved, Conflicting> {
        admin.authorize(Access::Write, &slug)?;

        let tenant = tenants::require_by_slug(state.db.control(), &slug).await?;

        let mut tx = tenancy::scope::begin(&state.db, &tenant.schema).await?;
        let removed = groups::remove_platform_members(
            &mut tx.db(),
            group_id.0,
            &[user_id.0],
            admin.request_id(),
        )
        .await
        .map_err(group_error)?;
        if removed.is_empty() {
            return Err(
                AdminError::NotFound("the user is not a member of this group".to_owned()).into(),
            );
        }
        let detail = json!({ "user_id": user_id.0 });
        audit(
            &mut tx.db(),
            &admin,
            "group.members.remove",
            &tenant,
            group_id.0,
            detail,
        )
        .await?;
        tx.commit().await?;

        Ok(MemberRemoved::Removed)
    }
}

fn parse_cursor(cursor: Option<&str>) -> Result<Option<Uuid>, AdminError> {
    cursor
        .map(|raw| {
            Uuid::parse_str(raw).map_err(|_| AdminError::BadRequest("invalid cursor".to_owned()))
        })
        .transpose()
}

/// Users to add to a group.
#[derive(Debug, Object)]
#[oai(example)]
pub struct AddMembersRequest {
    /// 1 to 1000 user ids of the tenant.
    pub user_ids: Vec<Uuid>,
}

impl AddMembersRequest {
    fn validated(self) -> Result<Vec<Uuid>, AdminError> {
        if self.user_ids.is_empty() || self.user_ids.len() > MAX_ADD {
            return Err(AdminError::BadRequest(format!(
                "user_ids must name 1 to {MAX_ADD} users"
            )));
        }
        Ok(self.user_ids)
    }
}

impl Example for AddMembersRequest {
    fn example() -> Self {
        AddMembersRequest {
            user_ids: vec![Uuid::from_u128(0x0190_6f3a_7c1e_7b2d_9a41_3e5f_2c6b_8d10)],
        }
    }
}

/// Who became a member.
#[derive(Debug, Object)]
pub struct MembersAdded {
    /// The users who were not members yet.
    pub added: Vec<Uuid>,
}

/// One member of a group.
#[derive(Debug, Object)]
#[oai(rename = "GroupMember")]
pub struct MemberView {
    pub user_id: Uuid,
    /// The user's display name, else their userName.
    pub display: String,
}

impl From<Member> for MemberView {
    fn from(member: Member) -> Self {
        MemberView {
            user_id: member.user_id,
            display: member.display,
        }
    }
}

/// One page of a group's members, by user id.
#[derive(Debug, Object)]
pub struct MemberPage {
    pub items: Vec<MemberView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

#[derive(ApiResponse)]
pub enum MemberRemoved {
    /// The user is no longer a member.
    #[oai(status = 204)]
    Removed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn additions_name_one_to_a_thousand_users() {
        let none = AddMembersRequest { user_ids: vec![] };
        let too_many = AddMembersRequest {
            user_ids: vec![Uuid::nil(); MAX_ADD + 1],
        };

        assert!(none.validated().is_err());
        assert!(too_many.validated().is_err());
        assert_eq!(AddMembersRequest::example().validated().unwrap().len(), 1);
    }

    #[test]
    fn member_cursors_are_user_ids() {
        let id = Uuid::now_v7();

        assert_eq!(parse_cursor(Some(&id.to_string())).unwrap(), Some(id));
        assert!(parse_cursor(Some("nope")).is_err());
    }
}
