//! The sync journal: what each SCIM request did, and every change the safety net made.
//!
//! Writes record their entry in their own transaction, so the journal never claims a change
//! that did not commit. Reads (Entra's match queries, most of the traffic) must not write on the
//! request path, so their entries — and the `last_synced_at` stamps of groups they read — go
//! through [`JournalWriter`], which batches them per tenant in the background. A batch that
//! Postgres cannot take (restarting, unreachable, no free pooled connection) is kept and tried
//! again, up to `RETRY_CAPACITY` entries, so an outage does not erase the reads served around
//! it (a batch whose commit was acknowledged but whose answer was lost may be written twice).
//! A crash of Roster can lose the last fraction of a second of read entries; it never loses a
//! change.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tenancy::db::Db;
use tenancy::scope::TenantDb;
use tenancy::SchemaName;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

const FLUSH_INTERVAL: Duration = Duration::from_millis(250);
const BATCH_LIMIT: usize = 1_000;
const QUEUE_CAPACITY: usize = 50_000;
/// Most read entries (and group stamps) kept for another try while Postgres is unavailable;
/// past it, batches that fail are dropped with a warning.
const RETRY_CAPACITY: usize = 50_000;

/// What a request did, in the journal's vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A read that found (or did not find) what it looked for.
    Matched,
    Created,
    /// Membership applied, or the safety net moved a user.
    Changed,
    /// A write Roster acknowledges but does not apply (the platform owns it).
    Ignored,
    /// A client mistake: refused, nothing changed.
    Rejected,
    /// A server-side or dependency failure: nothing changed.
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Matched => "matched",
            Outcome::Created => "created",
            Outcome::Changed => "changed",
            Outcome::Ignored => "ignored",
            Outcome::Rejected => "rejected",
            Outcome::Failed => "failed",
        }
    }
}

/// One journal entry. `detail` is short and redacted: never an email, a name or a filter
/// value.
#[derive(Debug, Clone)]
pub struct Entry {
    pub request_id: Option<String>,
    pub operation: &'static str,
    pub outcome: Outcome,
    pub status: Option<u16>,
    pub user_id: Option<Uuid>,
    pub group_id: Option<Uuid>,
    pub detail: Option<String>,
    pub quirks: Vec<&'static str>,
    pub fusionauth_outcome: Option<&'static str>,
    pub fusionauth_latency_ms: Option<i32>,
}

impl Entry {
    pub fn new(request_id: &str, operation: &'static str, outcome: Outcome, status: u16) -> Self {
        Entry {
            request_id: Some(request_id.to_owned()),
            operation,
            outcome,
            status: Some(status),
            user_id: None,
            group_id: None,
            detail: None,
            quirks: Vec::new(),
            fusionauth_outcome: None,
            fusionauth_latency_ms: None,
        }
    }

    pub fn user(mut self, id: Uuid) -> Self {
        self.user_id = Some(id);
        self
    }

    pub fn group(mut self, id: Uuid) -> Self {
        self.group_id = Some(id);
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn quirks(mut self, quirks: impl IntoIterator<Item = &'static str>) -> Self {
        self.quirks.extend(quirks);
        self
    }
}

/// Appends entries inside the caller's tenant transaction.
pub async fn record(db: &mut TenantDb<'_>, entries: &[Entry]) -> Result<(), sqlx::Error> {
    if entries.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&Entry) -> Option<String>| entries.iter().map(f).collect::<Vec<_>>();
    sqlx::query(&format!(
        "insert into {s}.journal (request_id, operation, outcome, status, user_id, group_id, detail, \
           quirks, fusionauth_outcome, fusionauth_latency_ms) \
         select r, o, c, s, u, g, d, coalesce(string_to_array(q, ','), '{{}}'), fo, fl \
         from unnest($1::text[], $2::text[], $3::text[], $4::int2[], $5::uuid[], $6::uuid[], \
           $7::text[], $8::text[], $9::text[], $10::int4[]) as t(r, o, c, s, u, g, d, q, fo, fl)", s = db.schema),
    )
    .bind(column(|e| e.request_id.clone()))
    .bind(column(|e| Some(e.operation.to_owned())))
    .bind(column(|e| Some(e.outcome.as_str().to_owned())))
    .bind(
        entries
            .iter()
            .map(|e| e.status.and_then(|s| i16::try_from(s).ok()))
            .collect::<Vec<_>>(),
    )
    .bind(entries.iter().map(|e| e.user_id).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.group_id).collect::<Vec<_>>())
    .bind(column(|e| e.detail.clone()))
    .bind(column(|e| {
        (!e.quirks.is_empty()).then(|| e.quirks.join(","))
    }))
    .bind(column(|e| e.fusionauth_outcome.map(str::to_owned)))
    .bind(
        entries
            .iter()
            .map(|e| e.fusionauth_latency_ms)
            .collect::<Vec<_>>(),
    )
    .execute(&mut *db.conn)
    .await?;
    Ok(())
}

enum Message {
    Entry(SchemaName, Entry),
    GroupRead(SchemaName, Uuid),
    Flush(oneshot::Sender<()>),
}

/// Batches read-path journal entries and `last_synced_at` stamps, per tenant, off the
/// request path.
#[derive(Clone)]
pub struct JournalWriter {
    sender: mpsc::Sender<Message>,
}

#[derive(Default)]
struct Pending {
    entries: Vec<Entry>,
    groups_read: Vec<Uuid>,
}

impl Pending {
    fn len(&self) -> usize {
        self.entries.len() + self.groups_read.len()
    }
}

impl JournalWriter {
    /// Starts the background writer; it stops when every handle is dropped.
    pub fn spawn(db: Db) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(run(db, receiver));
        JournalWriter { sender }
    }

    /// Queues an entry; when the queue is full the entry is dropped with a warning rather than
    /// slowing the request.
    pub fn submit(&self, schema: &SchemaName, entry: Entry) {
        self.send(Message::Entry(schema.clone(), entry));
    }

    /// Queues a `last_synced_at` stamp for a synced group a SCIM request read.
    pub fn group_read(&self, schema: &SchemaName, group_id: Uuid) {
        self.send(Message::GroupRead(schema.clone(), group_id));
    }

    /// Waits until everything queued so far is written.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.sender.send(Message::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    fn send(&self, message: Message) {
        if self.sender.try_send(message).is_err() {
            tracing::warn!("journal queue full: a read entry was dropped");
        }
    }
}

async fn run(db: Db, mut receiver: mpsc::Receiver<Message>) {
    let mut pending: HashMap<SchemaName, Pending> = HashMap::new();
    // Entries that arrived since the last write, and entries kept from a failed one.
    let mut queued = 0usize;
    let mut retained = 0usize;
    let mut ticker = tokio::time::interval(FLUSH_INTERVAL);
    loop {
        tokio::select! {
            message = receiver.recv() => match message {
                Some(Message::Entry(schema, entry)) => {
                    pending.entry(schema).or_default().entries.push(entry);
                    queued += 1;
                }
                Some(Message::GroupRead(schema, group)) => {
                    pending.entry(schema).or_default().groups_read.push(group);
                    queued += 1;
                }
                Some(Message::Flush(done)) => {
                    retained = write_all(&db, &mut pending).await;
                    queued = 0;
                    let _ = done.send(());
                }
                None => {
                    let lost = write_all(&db, &mut pending).await;
                    if lost > 0 {
                        tracing::warn!(entries = lost, "journal entries lost at shutdown");
                    }
                    return;
                }
            },
            _ = ticker.tick() => {
                if queued > 0 || retained > 0 {
                    retained = write_all(&db, &mut pending).await;
                    queued = 0;
                }
            }
        }
        if queued >= BATCH_LIMIT {
            retained = write_all(&db, &mut pending).await;
            queued = 0;
        }
    }
}

/// Writes every tenant's batch: those of the tenants at home in one pool (see [`Db`]) in one
/// transaction on that pool, or when that fails, each in its own. Batches Postgres cannot take
/// now stay in `pending`, ahead of what arrives next, for the next try; once one fails that way
/// the rest are not tried (they would only wait out the same outage). Returns how many entries
/// stayed.
async fn write_all(db: &Db, pending: &mut HashMap<SchemaName, Pending>) -> usize {
    let mut by_home: BTreeMap<usize, HashMap<SchemaName, Pending>> = BTreeMap::new();
    for (schema, batch) in pending.drain() {
        by_home
            .entry(db.home_of(&schema))
            .or_default()
            .insert(schema, batch);
    }
    let mut unavailable = false;
    for batches in by_home.values_mut() {
        if !unavailable {
            unavailable = write_home(db, batches).await;
        }
        pending.extend(batches.drain());
    }
    keep_within_retry_capacity(pending)
}

/// Writes the batches of tenants that share a home pool, leaving in `batches` the ones to try
/// again; true when Postgres is unavailable.
async fn write_home(db: &Db, batches: &mut HashMap<SchemaName, Pending>) -> bool {
    if batches.len() > 1 {
        match write_together(db, batches).await {
            Ok(()) => {
                batches.clear();
                return false;
            }
            Err(e) => tracing::debug!(error = %e,
                "journal batches written one tenant at a time: together they failed"),
        }
    }
    let mut unavailable = false;
    for (schema, batch) in std::mem::take(batches) {
        if unavailable {
            batches.insert(schema, batch);
            continue;
        }
        match write_batch(db, &schema, &batch)
            .await
            .map_err(tenancy::Error::from)
        {
            Ok(()) => {}
            Err(e) if e.is_unavailable() => {
                tracing::warn!(tenant.schema = %schema, error = %e,
                    "journal batches wait: Postgres is unavailable");
                unavailable = true;
                batches.insert(schema, batch);
            }
            Err(e) => tracing::warn!(tenant.schema = %schema, error = %e,
                "could not write journal batch"),
        }
    }
    unavailable
}

/// Drops the batches beyond [`RETRY_CAPACITY`] entries; returns how many entries stay.
fn keep_within_retry_capacity(pending: &mut HashMap<SchemaName, Pending>) -> usize {
    let mut retained = 0usize;
    pending.retain(|schema, batch| {
        if retained + batch.len() > RETRY_CAPACITY {
            tracing::warn!(tenant.schema = %schema, entries = batch.len(),
                "journal batch dropped: too many entries are waiting for Postgres");
            return false;
        }
        retained += batch.len();
        true
    });
    retained
}

/// One transaction and one commit for every tenant's batch, instead of one per tenant: with
/// many tenants a flush holds a few entries for each. Entries go first and the group stamps
/// last, tenants in schema order, so group rows stay locked only for the end of the transaction
/// and writers on other replicas lock them in the same order.
async fn write_together(
    db: &Db,
    pending: &HashMap<SchemaName, Pending>,
) -> Result<(), sqlx::Error> {
    let mut schemas: Vec<&SchemaName> = pending.keys().collect();
    schemas.sort_unstable();
    let Some(first) = schemas.first() else {
        return Ok(());
    };
    let mut tx = tenancy::scope::begin_across_tenants(db, first).await?;
    for schema in &schemas {
        record(&mut tx.db(schema), &pending[*schema].entries).await?;
    }
    for schema in &schemas {
        stamp_groups_read(&mut tx.db(schema), &pending[*schema].groups_read).await?;
    }
    tx.commit().await
}

async fn write_batch(db: &Db, schema: &SchemaName, batch: &Pending) -> Result<(), sqlx::Error> {
    let mut tx = tenancy::scope::begin(db, schema).await?;
    record(&mut tx.db(), &batch.entries).await?;
    stamp_groups_read(&mut tx.db(), &batch.groups_read).await?;
    tx.commit().await
}

/// Stamps `last_synced_at` of the synced groups SCIM reads returned.
async fn stamp_groups_read(db: &mut TenantDb<'_>, groups_read: &[Uuid]) -> Result<(), sqlx::Error> {
    if groups_read.is_empty() {
        return Ok(());
    }
    let mut groups_read = groups_read.to_vec();
    groups_read.sort_unstable();
    groups_read.dedup();
    // Lock in id order so that two replicas stamping overlapping groups cannot deadlock.
    sqlx::query(&format!(
        "update {s}.groups set last_synced_at = now() where id in \
         (select id from {s}.groups where id = any($1) order by id for no key update)",
        s = db.schema
    ))
    .bind(&groups_read)
    .execute(&mut *db.conn)
    .await?;
    Ok(())
}

/// Deletes entries older than each tenant's retention; returns how many went. A tenant whose
/// journal cannot be pruned is logged and skipped, so it holds back no other tenant; when
/// Postgres is unavailable the run stops and the next one catches up.
pub async fn prune(db: &Db) -> Result<u64, tenancy::Error> {
    let tenants: Vec<(String, i32)> =
        sqlx::query_as("select schema_name, journal_retention_days from roster_control.tenants")
            .fetch_all(db.control())
            .await?;
    let mut pruned = 0;
    for (schema, days) in tenants {
        let Ok(schema) = SchemaName::parse(&schema) else {
            continue;
        };
        match prune_tenant(db, &schema, days)
            .await
            .map_err(tenancy::Error::from)
        {
            Ok(deleted) => pruned += deleted,
            Err(e) if e.is_unavailable() => return Err(e),
            Err(e) => tracing::warn!(tenant.schema = %schema, error = %e,
                "could not prune the journal"),
        }
    }
    Ok(pruned)
}

async fn prune_tenant(db: &Db, schema: &SchemaName, days: i32) -> Result<u64, sqlx::Error> {
    let mut tx = tenancy::scope::begin(db, schema).await?;
    let db = tx.db();
    let deleted = sqlx::query(&format!(
        "delete from {s}.journal where at < now() - make_interval(days => $1)",
        s = db.schema
    ))
    .bind(days)
    .execute(&mut *db.conn)
    .await?;
    tx.commit().await?;
    Ok(deleted.rows_affected())
}

// ---------------------------------------------------------------------------------------------
// Reading the journal (the admin API)

/// A journal entry as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Record {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub request_id: Option<String>,
    pub operation: String,
    pub outcome: String,
    pub status: Option<i16>,
    pub user_id: Option<Uuid>,
    pub group_id: Option<Uuid>,
    pub detail: Option<String>,
    pub quirks: Vec<String>,
    pub fusionauth_outcome: Option<String>,
    pub fusionauth_latency_ms: Option<i32>,
}

/// Which entries a listing shows; every criterion given must hold.
#[derive(Debug, Clone, Default)]
pub struct Filter<'a> {
    pub user_id: Option<Uuid>,
    pub group_id: Option<Uuid>,
    pub outcome: Option<&'a str>,
    pub operation: Option<&'a str>,
    /// Entries at or after this instant.
    pub from: Option<DateTime<Utc>>,
    /// Entries before this instant.
    pub to: Option<DateTime<Utc>>,
    /// Entries older than this id (the previous page's last).
    pub before_id: Option<i64>,
}

/// Entries matching `filter`, newest first, at most `limit`.
pub async fn list(
    db: &mut TenantDb<'_>,
    filter: &Filter<'_>,
    limit: i64,
) -> Result<Vec<Record>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select id, at, request_id, operation, outcome, status, user_id, group_id, detail, \
           quirks, fusionauth_outcome, fusionauth_latency_ms from {s}.journal \
         where ($1::uuid is null or user_id = $1) \
           and ($2::uuid is null or group_id = $2) \
           and ($3::text is null or outcome = $3) \
           and ($4::text is null or operation = $4) \
           and ($5::timestamptz is null or at >= $5) \
           and ($6::timestamptz is null or at < $6) \
           and ($7::bigint is null or id < $7) \
         order by id desc limit $8",
        s = db.schema
    ))
    .bind(filter.user_id)
    .bind(filter.group_id)
    .bind(filter.outcome)
    .bind(filter.operation)
    .bind(filter.from)
    .bind(filter.to)
    .bind(filter.before_id)
    .bind(limit)
    .fetch_all(&mut *db.conn)
    .await
}

/// How often something happened since a moment, derived from the journal.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// Writes Roster acknowledged without applying, by operation.
    pub ignored: Vec<(String, i64)>,
    /// Entra dialect variations, by quirk.
    pub quirks: Vec<(String, i64)>,
    pub errors: Vec<ErrorCount>,
}

/// Rejected or failed requests of one kind.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ErrorCount {
    /// `rejected` (the client's mistake) or `failed` (Roster's or FusionAuth's).
    pub outcome: String,
    pub operation: String,
    pub status: Option<i16>,
    pub fusionauth_outcome: Option<String>,
    pub count: i64,
}

/// The tenant's counters over the entries since `since`, most frequent first.
pub async fn counters(
    db: &mut TenantDb<'_>,
    since: DateTime<Utc>,
) -> Result<Counters, sqlx::Error> {
    let ignored = sqlx::query_as(&format!(
        "select operation, count(*) from {s}.journal where at >= $1 and outcome = 'ignored' \
         group by operation order by count(*) desc, operation",
        s = db.schema
    ))
    .bind(since)
    .fetch_all(&mut *db.conn)
    .await?;
    let quirks = sqlx::query_as(&format!(
        "select q, count(*) from {s}.journal cross join unnest(quirks) as q where at >= $1 \
         group by q order by count(*) desc, q",
        s = db.schema
    ))
    .bind(since)
    .fetch_all(&mut *db.conn)
    .await?;
    let errors = sqlx::query_as(&format!(
        "select outcome, operation, status, fusionauth_outcome, count(*) as count from {s}.journal \
         where at >= $1 and outcome in ('rejected', 'failed') \
         group by outcome, operation, status, fusionauth_outcome \
         order by count(*) desc, outcome, operation", s = db.schema))
    .bind(since)
    .fetch_all(&mut *db.conn)
    .await?;
    Ok(Counters {
        ignored,
        quirks,
        errors,
    })
}
