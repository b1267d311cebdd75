//! How a group PATCH's cost depends on the group's size. Numbers, not a pass/fail timing:
//!
//! ```text
//! cargo test --release -p api --test it groups_bench -- --ignored --nocapture
//! ```

use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::groups_helpers::{add_members, begin, create_group, insert_users_bulk};
use crate::helpers::{spawn_app_with, TestApp, TestTenant};

const SMALL_GROUP: i64 = 10;
const LARGE_GROUP: i64 = 100_000;
const ONE_MEMBER_ROUNDS: usize = 200;
const BULK_ROUNDS: usize = 10;
const BULK_SIZE: usize = 1_000;

#[tokio::test]
#[ignore = "benchmark: run in release with --ignored --nocapture"]
async fn bench_patch_cost_against_group_size() {
    let app = spawn_app_with(|config| config.body_limit_bytes = 1_048_576).await;
    let tenant = app.create_tenant().await;
    let small = create_group(&app, &tenant, true).await.id;
    let large = create_group(&app, &tenant, true).await.id;
    insert_users_bulk(&app, &tenant, SMALL_GROUP, Some(small)).await;
    insert_users_bulk(&app, &tenant, LARGE_GROUP, Some(large)).await;
    let newcomers = 2 * ONE_MEMBER_ROUNDS + BULK_ROUNDS * BULK_SIZE;
    let newcomers = insert_users_bulk(&app, &tenant, newcomers as i64, None).await;
    analyze(&app, &tenant).await;
    let (singles, bulk) = newcomers.split_at(2 * ONE_MEMBER_ROUNDS);

    // Alternate between the groups so both see the same server and cache conditions.
    let (mut to_small, mut to_large) = (Vec::new(), Vec::new());
    for pair in singles.chunks(2) {
        to_small.push(timed_add(&app, &tenant, small, &pair[..1]).await);
        to_large.push(timed_add(&app, &tenant, large, &pair[1..]).await);
    }
    let mut thousands = Vec::new();
    for chunk in bulk.chunks(BULK_SIZE) {
        thousands.push(timed_add(&app, &tenant, large, chunk).await);
    }

    println!("PATCH /Groups/{{id}} latency through HTTP, real Postgres (ms):");
    report("add 1 member, group of 10", &mut to_small);
    report("add 1 member, group of 100,000", &mut to_large);
    report("add 1,000 members, group of 100,000+", &mut thousands);
}

async fn analyze(app: &TestApp, tenant: &TestTenant) {
    let mut tx = begin(app, tenant).await;
    sqlx::query("analyze users, groups, memberships")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

async fn timed_add(app: &TestApp, tenant: &TestTenant, group: Uuid, users: &[Uuid]) -> Duration {
    let started = Instant::now();
    let reply = add_members(app, tenant, group, users).await;
    let elapsed = started.elapsed();
    assert_eq!(reply.status, 204, "{reply:?}");
    elapsed
}

fn report(label: &str, samples: &mut [Duration]) {
    samples.sort_unstable();
    let at = |q: f64| {
        let index = ((samples.len() - 1) as f64 * q).round() as usize;
        samples[index].as_secs_f64() * 1000.0
    };
    println!(
        "  {label:<40} n={:<4} median {:>7.2}  p95 {:>7.2}  max {:>7.2}",
        samples.len(),
        at(0.5),
        at(0.95),
        at(1.0)
    );
}
