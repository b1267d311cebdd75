//! SCIM listings over one tenant table: a filtered page, oldest first, and how many rows
//! matched in all, in one round trip.
//!
//! Most listings are Entra's match queries (`emails[type eq "work"].value eq "…"`,
//! `externalId eq "…"`), which name a unique column and so match at most one row: those are
//! answered by the bare index lookup, with no count, sort or offset for Postgres to do.
//! Anything else carries its total as a window count beside the page.

use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::QueryAs;
use sqlx::{FromRow, Postgres, Row};
use tenancy::scope::TenantDb;

use crate::scim::filter::{SqlFilter, SqlValue};

/// One page of a listing and how many rows matched in all.
#[derive(Debug)]
pub struct Page<T> {
    pub total: i64,
    pub items: Vec<T>,
}

/// What a listing reads: `select {columns} from {schema}.{table} where {scope} and <filter>`.
pub(crate) struct Listing {
    pub table: &'static str,
    /// The columns `T` is read from.
    pub columns: &'static str,
    /// What every listed row satisfies besides the filter (`true` for all rows).
    pub scope: &'static str,
}

/// Rows matching `filter` (all when `None`), ordered by `created_at, id`, `limit` from
/// `offset`.
pub(crate) async fn page<T>(
    db: &mut TenantDb<'_>,
    listing: &Listing,
    filter: Option<&SqlFilter>,
    offset: i64,
    limit: i64,
) -> Result<Page<T>, sqlx::Error>
where
    T: for<'r> FromRow<'r, PgRow> + Send + Unpin,
{
    let Listing {
        table,
        columns,
        scope,
    } = listing;
    let condition = filter.map_or("true", |f| f.sql.as_str());
    let binds = filter.map_or(&[][..], |f| f.binds.as_slice());
    let from = format!("{s}.{table} where {scope} and {condition}", s = db.schema);

    if filter.is_some_and(|f| f.at_most_one) {
        let rows: Vec<T> = bind_filter(
            sqlx::query_as(&format!("select {columns} from {from}")),
            binds,
        )
        .fetch_all(&mut *db.conn)
        .await?;
        return Ok(Page {
            total: rows.len() as i64,
            items: rows
                .into_iter()
                .skip(offset as usize)
                .take(limit as usize)
                .collect(),
        });
    }
    if limit == 0 {
        return Ok(Page {
            total: count(db, &from, binds).await?,
            items: Vec::new(),
        });
    }

    let sql = format!(
        "select {columns}, count(*) over () as total from {from} \
         order by created_at, id offset ${} limit ${}",
        binds.len() + 1,
        binds.len() + 2
    );
    let rows: Vec<Counted<T>> = bind_filter(sqlx::query_as(&sql), binds)
        .bind(offset)
        .bind(limit)
        .fetch_all(&mut *db.conn)
        .await?;
    let total = match rows.first() {
        Some(row) => row.total,
        // A page past the end carries no window count.
        None if offset > 0 => count(db, &from, binds).await?,
        None => 0,
    };
    Ok(Page {
        total,
        items: rows.into_iter().map(|row| row.row).collect(),
    })
}

async fn count(db: &mut TenantDb<'_>, from: &str, binds: &[SqlValue]) -> Result<i64, sqlx::Error> {
    let sql = format!("select count(*) from {from}");
    let (total,) = bind_filter(sqlx::query_as::<_, (i64,)>(&sql), binds)
        .fetch_one(&mut *db.conn)
        .await?;
    Ok(total)
}

/// A row with the listing's window count beside it.
struct Counted<T> {
    row: T,
    total: i64,
}

impl<'r, T: FromRow<'r, PgRow>> FromRow<'r, PgRow> for Counted<T> {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        Ok(Counted {
            row: T::from_row(row)?,
            total: row.try_get("total")?,
        })
    }
}

/// Binds filter values in order.
fn bind_filter<'q, O>(
    mut query: QueryAs<'q, Postgres, O, PgArguments>,
    binds: &'q [SqlValue],
) -> QueryAs<'q, Postgres, O, PgArguments> {
    for value in binds {
        query = match value {
            SqlValue::Text(v) => query.bind(v.as_str()),
            SqlValue::Uuid(v) => query.bind(*v),
            SqlValue::Bool(v) => query.bind(*v),
            SqlValue::Timestamp(v) => query.bind(*v),
        };
    }
    query
}
