//! Backfill and reconcile from Clerk's Backend API (a fake of it, the one outside service
//! we can't run), into the real broker and store through the real consumer.

use std::collections::HashMap;
use std::time::Duration;

use bson::{doc, DateTime, Document};
use futures::TryStreamExt;
use serde_json::Value;
use test_support::fake_clerk::{FakeClerk, Fault, MAX_OFFSET};
use test_support::TestEnv;
use user_sync::backfill::{self, Summary};
use user_sync::reconcile;
use user_sync::Entity;
use user_sync::Progress;
use user_sync::PublishConfig;
use user_sync::{ClerkApi, RetryPolicy};
use user_sync::{Publisher, Sink};

use crate::helpers::*;

const KEY: &str = "sk_test_fake_backfill_key";

fn api(fake: &FakeClerk) -> ClerkApi {
    let policy = RetryPolicy {
        first_backoff: Duration::from_millis(200),
        ..RetryPolicy::default()
    };
    ClerkApi::new(&fake.url, KEY.to_string().into(), policy).unwrap()
}

async fn kafka_sink(app: &App) -> Sink {
    let config = PublishConfig::from_vars(vars(&app.env, &app.names, &[])).unwrap();
    Sink::Kafka(Publisher::new(&config).await.unwrap())
}

async fn run_backfill(app: &App, fake: &FakeClerk, options: &backfill::Options) -> Summary {
    let mut sink = kafka_sink(app).await;
    backfill::run(&api(fake), &mut sink, options, &mut Progress::hidden())
        .await
        .unwrap()
}

fn all(page_size: u32) -> backfill::Options {
    backfill::Options {
        kinds: backfill::KINDS.to_vec(),
        page_size,
        users: vec![],
        organizations: vec![],
    }
}

async fn count(db: &mongodb::Database, filter: Document) -> u64 {
    db.collection::<Document>("webhook_events")
        .count_documents(filter)
        .await
        .unwrap()
}

async fn documents(db: &mongodb::Database, collection: &str) -> HashMap<String, Document> {
    db.collection::<Document>(collection)
        .find(doc! {})
        .await
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.get_str("clerkId").unwrap().to_string(), d))
        .collect()
}

/// A command's stdout, once it is known to have succeeded (its output shown otherwise).
fn succeeded(output: &std::process::Output) -> String {
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

fn millis(v: &Value) -> DateTime {
    DateTime::from_millis(v.as_i64().unwrap())
}

/// The issue's scenario: an instance that existed before the webhook, with organizations,
/// their memberships and invitations, and Clerk Billing. On FerretDB, whose writes take
/// about 100 ms each, the instance is smaller; CI also runs this suite on the index-backed
/// memory engine at the full size (2,000 users: their offsets would pass the fake's limit).
#[tokio::test]
async fn backfill_of_an_existing_instance_matches_clerk_and_respects_newer_webhooks() {
    let env = TestEnv::new().await;
    let names = names(&env);
    let app = spawn_app_configured(env, names, &[ALL_STREAMS]).await;
    let ferretdb = test_support::is_ferretdb(app.db.client()).await;
    let (n_users, n_orgs, n_paying) = if ferretdb {
        (100, 5, 20)
    } else {
        (2000, 50, 200)
    };
    let fake = FakeClerk::start(KEY).await;
    fake.add_users("b", n_users);
    fake.add_organizations("b", n_orgs, |i| 1 + i % 5);
    fake.add_invitations(3);
    fake.add_subscription_items(n_paying);
    let n_memberships: usize = fake.data().memberships.values().map(Vec::len).sum();
    let n_invitations = fake.data().invitations.len();
    let n_items = fake.data().subscription_items.len();
    // Page 2 of the users (pages of 50, by cursor) is rate limited once (Retry-After: 1),
    // page 3 fails once.
    fake.fault(Fault {
        path: "/v1/users".into(),
        offset: 0,
        starting_after: Some("user_b_49".into()),
        status: 429,
        retry_after: Some(1),
        times: 1,
    });
    fake.fault(Fault {
        path: "/v1/users".into(),
        offset: 0,
        starting_after: Some("user_b_99".into()),
        status: 500,
        retry_after: None,
        times: 1,
    });

    // A webhook newer than the snapshot, sent before the backfill.
    let p = producer(&app.env);
    let newer = fake.data().users[0].clone();
    let snapshot_time = newer["updated_at"].as_i64().unwrap();
    let webhook = user_event(
        Kind::Updated,
        "user_b_0",
        "msg_newer",
        snapshot_time + 1000,
        "Newer",
    );
    produce(&p, &app.names.topic, &webhook).await;
    wait_records(&app.db, 1, Duration::from_secs(30)).await;

    let summary = run_backfill(&app, &fake, &all(50)).await;
    eprintln!("first backfill: {summary}");
    let objects = n_users + n_orgs + n_memberships + n_invitations + n_items;
    assert_eq!(summary.fetched.get(&Entity::User), Some(&(n_users as u64)));
    assert_eq!(
        summary.fetched.get(&Entity::Organization),
        Some(&(n_orgs as u64))
    );
    assert_eq!(
        summary.fetched.get(&Entity::Membership),
        Some(&(n_memberships as u64))
    );
    assert_eq!(
        summary.fetched.get(&Entity::Invitation),
        Some(&(n_invitations as u64))
    );
    assert_eq!(
        summary.fetched.get(&Entity::SubscriptionItem),
        Some(&(n_items as u64))
    );
    assert_eq!(summary.published.values().sum::<u64>(), objects as u64);
    assert_eq!(summary.skipped_count, 0);
    assert!(!summary.to_string().contains("warning"), "{summary}");

    // The fake's log: users by cursor only, every other list within its offset limit, and
    // memberships from the one instance-wide list.
    let requests = fake.requests();
    let users: Vec<_> = requests.iter().filter(|r| r.path == "/v1/users").collect();
    eprintln!(
        "the fake's log: {} requests; /v1/users: {}",
        requests.len(),
        users
            .iter()
            .take(4)
            .map(|r| format!("starting_after={:?} → {}", r.starting_after, r.status))
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert!(
        users.iter().all(|r| r.offset == 0),
        "a users page by offset"
    );
    let cursor_pages = users
        .iter()
        .filter(|r| r.status == 200 && r.starting_after.is_some())
        .count();
    assert_eq!(cursor_pages, n_users / 50, "one cursor page per 50 users");
    assert!(requests
        .iter()
        .all(|r| r.offset <= MAX_OFFSET && r.status != 422));
    assert!(!requests.iter().any(|r| r.path.ends_with("/memberships")));
    for list in [
        "/v1/organization_memberships",
        "/v1/organization_invitations",
        "/v1/billing/subscription_items",
    ] {
        assert!(requests.iter().any(|r| r.path == list), "{list} not read");
    }

    // The 429 was waited out for as long as Retry-After said; the 500 was retried.
    let at = |after: &str| -> Vec<_> {
        users
            .iter()
            .filter(|r| r.starting_after.as_deref() == Some(after))
            .collect()
    };
    let limited = at("user_b_49");
    assert_eq!(
        limited.iter().map(|r| r.status).collect::<Vec<_>>(),
        [429, 200]
    );
    let waited = limited[1].at - limited[0].at;
    eprintln!("429 with Retry-After: 1 → asked again after {waited:?}");
    assert!(waited >= Duration::from_secs(1), "waited only {waited:?}");
    assert!(waited < Duration::from_secs(3), "waited {waited:?}");
    let failed = at("user_b_99");
    assert_eq!(
        failed.iter().map(|r| r.status).collect::<Vec<_>>(),
        [500, 200]
    );

    wait_records(&app.db, 1 + objects as u64, Duration::from_secs(600)).await;

    // Every document matches the fake's object.
    let users = documents(&app.db, "users").await;
    assert_eq!(users.len(), n_users);
    for object in &fake.data().users {
        let id = object["id"].as_str().unwrap();
        let d = &users[id];
        if id == "user_b_0" {
            // The webhook was newer: the snapshot is stale and changed nothing.
            assert_eq!(d.get_str("firstName").unwrap(), "Newer", "{d}");
            assert_eq!(d.get_str("lastEventId").unwrap(), "msg_newer");
            continue;
        }
        assert_eq!(
            d.get_str("firstName").unwrap(),
            object["first_name"].as_str().unwrap()
        );
        assert_eq!(
            d.get_str("lastName").unwrap(),
            object["last_name"].as_str().unwrap()
        );
        assert_eq!(d.get_str("email").unwrap(), format!("{id}@example.com"));
        assert!(d.get_bool("emailVerified").unwrap());
        assert_eq!(
            d.get_str("imageUrl").unwrap(),
            object["image_url"].as_str().unwrap()
        );
        assert_eq!(
            d.get_datetime("clerkCreatedAt").unwrap(),
            &millis(&object["created_at"])
        );
        assert_eq!(
            d.get_datetime("clerkUpdatedAt").unwrap(),
            &millis(&object["updated_at"])
        );
        assert_eq!(
            d.get_datetime("lastSignInAt").unwrap(),
            &millis(&object["last_sign_in_at"])
        );
        assert_eq!(
            d.get_str("lastEventId").unwrap(),
            format!("backfill:{id}:{}", object["updated_at"])
        );
        assert!(!d.get_bool("isDeleted").unwrap());
        assert_eq!(d.get_str("syncStatus").unwrap(), "synced");
    }
    // The messages say where they came from, as the records do.
    let published = read_topic(&app.env.brokers, &app.names.organizations, 1)
        .await
        .remove(0);
    assert_eq!(
        common::kafka::header(&published, "event-origin").as_deref(),
        Some("backfill")
    );
    let message =
        events::EventMessage::decode(rdkafka::Message::payload(&published).unwrap()).unwrap();
    assert_eq!(message.origin, events::Origin::Backfill);
    assert_eq!(
        message.instance_id.as_deref(),
        Some(test_support::fake_clerk::INSTANCE)
    );
    let stale = record(&app.db, &format!("backfill:user_b_0:{snapshot_time}")).await;
    assert_eq!(stale.get_str("outcome").unwrap(), "stale", "{stale}");
    assert_eq!(stale.get_str("origin").unwrap(), "backfill");
    assert_eq!(
        record(&app.db, "msg_newer")
            .await
            .get_str("origin")
            .unwrap(),
        "webhook"
    );

    let organizations = documents(&app.db, "organizations").await;
    assert_eq!(organizations.len(), n_orgs);
    for object in &fake.data().organizations {
        let d = &organizations[object["id"].as_str().unwrap()];
        assert_eq!(d.get_str("name").unwrap(), object["name"].as_str().unwrap());
        assert_eq!(d.get_str("slug").unwrap(), object["slug"].as_str().unwrap());
        assert_eq!(
            d.get_i64("membersCount")
                .ok()
                .or(d.get_i32("membersCount").ok().map(i64::from)),
            object["members_count"].as_i64()
        );
        assert_eq!(
            d.get_datetime("clerkUpdatedAt").unwrap(),
            &millis(&object["updated_at"])
        );
    }
    let memberships = documents(&app.db, "organizationMemberships").await;
    assert_eq!(memberships.len(), n_memberships);
    for (org, list) in &fake.data().memberships {
        for object in list {
            let d = &memberships[object["id"].as_str().unwrap()];
            assert_eq!(d.get_str("organizationId").unwrap(), org);
            assert_eq!(
                d.get_str("userId").unwrap(),
                object["public_user_data"]["user_id"].as_str().unwrap()
            );
            assert_eq!(d.get_str("role").unwrap(), object["role"].as_str().unwrap());
        }
    }
    let invitations = documents(&app.db, "organizationInvitations").await;
    assert_eq!(invitations.len(), n_invitations);
    for object in &fake.data().invitations {
        let d = &invitations[object["id"].as_str().unwrap()];
        for (field, key) in [
            ("organizationId", "organization_id"),
            ("emailAddress", "email_address"),
            ("status", "status"),
        ] {
            assert_eq!(d.get_str(field).unwrap(), object[key].as_str().unwrap());
        }
    }
    let items = documents(&app.db, "subscriptionItems").await;
    assert_eq!(items.len(), n_items);
    for object in &fake.data().subscription_items {
        let d = &items[object["id"].as_str().unwrap()];
        let payer = &object["payer"];
        let (payer_id, payer_type) = match payer["user_id"].as_str() {
            Some(user) => (user, "user"),
            None => (payer["organization_id"].as_str().unwrap(), "organization"),
        };
        assert_eq!(d.get_str("payerId").unwrap(), payer_id);
        assert_eq!(d.get_str("payerType").unwrap(), payer_type);
        assert_eq!(
            d.get_str("clerkPayerId").unwrap(),
            payer["id"].as_str().unwrap()
        );
        assert_eq!(
            d.get_str("status").unwrap(),
            object["status"].as_str().unwrap()
        );
        assert_eq!(
            d.get_str("planSlug").unwrap(),
            object["plan"]["slug"].as_str().unwrap()
        );
        assert_eq!(
            d.get_i64("planAmount").unwrap(),
            object["plan"]["fee"]["amount"].as_i64().unwrap()
        );
        assert_eq!(d.get_str("interval").unwrap(), "month");
    }
    let applied = count(&app.db, doc! {"origin": "backfill", "outcome": "applied"}).await;
    assert_eq!(
        applied,
        objects as u64 - 1,
        "all but the stale snapshot applied"
    );

    // A second run publishes the same ids: every one a duplicate, no document changed.
    let before = (
        documents(&app.db, "users").await,
        documents(&app.db, "organizations").await,
        documents(&app.db, "organizationMemberships").await,
        documents(&app.db, "organizationInvitations").await,
        documents(&app.db, "subscriptionItems").await,
    );
    let again = run_backfill(&app, &fake, &all(500)).await;
    assert_eq!(again.published, summary.published);
    test_support::eventually(
        Duration::from_secs(300),
        "the second run consumed",
        || async {
            let n = count(&app.db, doc! {"origin": "backfill", "duplicates": 1}).await;
            (n == objects as u64).then_some(())
        },
    )
    .await;
    assert_eq!(
        count(&app.db, doc! {}).await,
        1 + objects as u64,
        "no new event ids"
    );
    let after = (
        documents(&app.db, "users").await,
        documents(&app.db, "organizations").await,
        documents(&app.db, "organizationMemberships").await,
        documents(&app.db, "organizationInvitations").await,
        documents(&app.db, "subscriptionItems").await,
    );
    for (b, a) in [
        (&before.0, &after.0),
        (&before.1, &after.1),
        (&before.2, &after.2),
        (&before.3, &after.3),
        (&before.4, &after.4),
    ] {
        assert_eq!(a.len(), b.len());
        for (id, d) in b {
            let now = &a[id];
            let changed: Vec<&String> = d
                .keys()
                .chain(now.keys())
                .filter(|k| d.get(k.as_str()) != now.get(k.as_str()))
                .collect();
            assert!(
                changed.is_empty(),
                "the second run changed {id}: {changed:?}\nnow: {now}"
            );
        }
    }

    // A webhook older than the snapshot, sent after it, is stale.
    let old = user_event(Kind::Updated, "user_b_1", "msg_older", T0 - 1000, "Older");
    produce(&p, &app.names.topic, &old).await;
    wait_records(&app.db, 2 + objects as u64, Duration::from_secs(30)).await;
    assert_eq!(
        record(&app.db, "msg_older")
            .await
            .get_str("outcome")
            .unwrap(),
        "stale"
    );
    assert_eq!(
        user_doc(&app.db, "user_b_1")
            .await
            .get_str("firstName")
            .unwrap(),
        "First1"
    );
    app.stop().await;
}

const T0: i64 = test_support::fake_clerk::CREATED;

#[tokio::test]
async fn reconcile_deletes_exactly_what_clerk_no_longer_has_and_only_after_a_full_listing() {
    let app = spawn_app(TestEnv::new().await).await;
    let fake = FakeClerk::start(KEY).await;
    fake.add_users("r", 25);
    fake.add_organizations("r", 3, |_| 2);
    let objects = 25 + 3 + 6;
    run_backfill(&app, &fake, &all(10)).await;
    wait_records(&app.db, objects, Duration::from_secs(120)).await;

    // Deleted in Clerk while the webhooks were lost.
    for id in ["user_r_3", "user_r_11", "user_r_24"] {
        fake.delete_user(id);
    }
    fake.data().organizations.retain(|o| o["id"] != "org_r_1");
    let options = reconcile::Options {
        kinds: vec![Entity::User, Entity::Organization],
        page_size: 10,
        max_deletions: None,
    };
    let store = store(&app.env, &app.names).await;

    // A listing that fails for good (page 2 of the users never comes) publishes nothing.
    // (user_r_3 is gone: the first page of 10 ends with user_r_10.)
    fake.fault(Fault {
        path: "/v1/users".into(),
        offset: 0,
        starting_after: Some("user_r_10".into()),
        status: 500,
        retry_after: None,
        times: u32::MAX,
    });
    let mut sink = kafka_sink(&app).await;
    let fast = ClerkApi::new(
        &fake.url,
        KEY.to_string().into(),
        RetryPolicy {
            attempts: 2,
            first_backoff: Duration::from_millis(50),
            ..RetryPolicy::default()
        },
    )
    .unwrap();
    let err = reconcile::run(&fast, &store, &mut sink, &options, &mut Progress::hidden())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nothing was published"), "{err}");
    assert_eq!(sink.published_total(), 0);
    fake.data().faults.clear();

    // The key of another instance lists successfully, and nothing: every document would
    // look deleted. Over the limit (10% of the documents, at least 10), nothing is published.
    let other = FakeClerk::start(KEY).await;
    let err = reconcile::run(
        &api(&other),
        &store,
        &mut sink,
        &options,
        &mut Progress::hidden(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("--max-deletions 28"), "{err}");
    assert_eq!(sink.published_total(), 0);
    sink.flush().await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        count(&app.db, doc! {"origin": "reconcile"}).await,
        0,
        "a failed run published deletions"
    );

    // Dry run: found and printed, nothing published.
    let mut dry = Sink::dry_run();
    let report = reconcile::run(
        &api(&fake),
        &store,
        &mut dry,
        &options,
        &mut Progress::hidden(),
    )
    .await
    .unwrap();
    let text = report.to_string();
    eprintln!("{text}");
    assert!(text.contains("would delete user_r_11"), "{text}");
    let missing: Vec<(Entity, Vec<String>)> = report
        .kinds
        .iter()
        .map(|(k, f)| {
            let mut ids = f.missing.clone();
            ids.sort();
            (*k, ids)
        })
        .collect();
    assert_eq!(
        missing,
        [
            (
                Entity::User,
                vec!["user_r_11".into(), "user_r_24".into(), "user_r_3".into()]
            ),
            (Entity::Organization, vec!["org_r_1".to_string()]),
        ]
    );
    assert_eq!(dry.published_total(), 4, "counted, not sent");

    // Applied: exactly those are deleted, through the ordinary rules.
    let mut sink = kafka_sink(&app).await;
    let report = reconcile::run(
        &api(&fake),
        &store,
        &mut sink,
        &options,
        &mut Progress::hidden(),
    )
    .await
    .unwrap();
    assert!(report.applied);
    wait_records(&app.db, objects + 4, Duration::from_secs(60)).await;
    assert_eq!(count(&app.db, doc! {"origin": "reconcile"}).await, 4);
    let users = documents(&app.db, "users").await;
    let deleted: Vec<&str> = {
        let mut v: Vec<&str> = users
            .iter()
            .filter(|(_, d)| d.get_bool("isDeleted").unwrap())
            .map(|(id, _)| id.as_str())
            .collect();
        v.sort_unstable();
        v
    };
    assert_eq!(deleted, ["user_r_11", "user_r_24", "user_r_3"]);
    let d = &users["user_r_3"];
    assert_eq!(d.get_str("lastEventId").unwrap(), "reconcile:user_r_3");
    assert_eq!(
        d.get_datetime("deletedAt").unwrap(),
        &DateTime::from_millis(report.started_at)
    );
    let organizations = documents(&app.db, "organizations").await;
    for (id, d) in &organizations {
        assert_eq!(d.get_bool("isDeleted").unwrap(), id == "org_r_1", "{id}");
    }

    // Run again: nothing left to find.
    let mut dry = Sink::dry_run();
    let report = reconcile::run(
        &api(&fake),
        &store,
        &mut dry,
        &options,
        &mut Progress::hidden(),
    )
    .await
    .unwrap();
    assert!(
        report.kinds.iter().all(|(_, f)| f.missing.is_empty()),
        "{report}"
    );
    app.stop().await;
}

/// The binary: `--help`, a dry run's printout, the on-demand path (`--user`,
/// `--organization`), and a wrong key named without its value.
#[tokio::test]
async fn the_command_line_backfills_on_demand_and_names_a_wrong_key_without_showing_it() {
    let app = spawn_app(TestEnv::new().await).await;
    let fake = FakeClerk::start(KEY).await;
    fake.add_users("c", 12);
    fake.add_organizations("c", 2, |_| 3);
    fake.add_invitations(2);
    let run = |args: &'static [&'static str], key: &'static str| {
        let mut c = std::process::Command::new(BIN);
        c.env_clear()
            .envs(vars(&app.env, &app.names, &[]))
            .env("CLERK_SECRET_KEY", key)
            .env("CLERK_API_URL", &fake.url)
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .args(args);
        async move {
            tokio::task::spawn_blocking(move || c.output().unwrap())
                .await
                .unwrap()
        }
    };

    let help = run(&["--help"], KEY).await;
    let text = String::from_utf8_lossy(&help.stdout);
    for sub in ["run", "show-user", "backfill", "reconcile", "healthcheck"] {
        assert!(text.contains(sub), "{sub} missing from\n{text}");
    }

    // Clerk counts 3 users more than it lists: the summary says so.
    fake.data().phantom_users = 3;
    let dry = run(&["backfill", "--dry-run", "--page-size", "5"], KEY).await;
    fake.data().phantom_users = 0;
    let out = succeeded(&dry);
    assert!(out.contains("nothing published"), "{out}");
    assert!(
        out.contains("warning: Clerk counted 15 users before the listing, which gave 12"),
        "{out}"
    );
    assert!(
        !out.contains("warning: Clerk counted 2 organizations"),
        "{out}"
    );
    for line in ["users", "organizations", "memberships", "invitations"] {
        let fetched = match line {
            "users" => 12,
            "organizations" => 2,
            "invitations" => 4,
            _ => 6,
        };
        assert!(
            out.lines().any(|l| l.trim_start().starts_with(line)
                && l.contains(&format!("fetched {fetched:>8}"))
                && l.contains(&format!("would publish {fetched:>8}"))),
            "{line}: {out}"
        );
    }

    let targeted = run(
        &[
            "backfill",
            "--user",
            "user_c_7",
            "--user",
            "user_missing",
            "--organization",
            "org_c_1",
        ],
        KEY,
    )
    .await;
    let out = succeeded(&targeted);
    assert!(out.contains("not found in Clerk: user_missing"), "{out}");
    // The user, the organization, its 3 memberships and its 2 invitations.
    wait_records(&app.db, 1 + 1 + 3 + 2, Duration::from_secs(60)).await;
    let d = user_doc(&app.db, "user_c_7").await;
    assert_eq!(d.get_str("firstName").unwrap(), "First7");
    assert_eq!(
        app.db
            .collection::<Document>("users")
            .count_documents(doc! {})
            .await
            .unwrap(),
        1,
        "only the user asked for"
    );
    assert_eq!(
        app.db
            .collection::<Document>("organizationMemberships")
            .count_documents(doc! {"organizationId": "org_c_1"})
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        app.db
            .collection::<Document>("organizationInvitations")
            .count_documents(doc! {"organizationId": "org_c_1"})
            .await
            .unwrap(),
        2,
        "the organization's own invitations"
    );

    // Deleted in Clerk, webhook lost: reconcile finds it, and deletes it only with --apply.
    fake.delete_user("user_c_7");
    let dry = run(&["reconcile"], KEY).await;
    let out = succeeded(&dry);
    assert!(out.contains("would delete user_c_7"), "{out}");
    assert!(!user_doc(&app.db, "user_c_7")
        .await
        .get_bool("isDeleted")
        .unwrap());
    let applied = run(&["reconcile", "--apply"], KEY).await;
    let out = succeeded(&applied);
    assert!(out.contains("deleted user_c_7"), "{out}");
    test_support::eventually(
        Duration::from_secs(60),
        "the reconcile deletion applied",
        || async {
            user_doc(&app.db, "user_c_7")
                .await
                .get_bool("isDeleted")
                .ok()?
                .then_some(())
        },
    )
    .await;

    let wrong = run(&["backfill", "--dry-run"], "sk_test_WRONG_SECRET_VALUE").await;
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(!wrong.status.success());
    assert!(err.contains("CLERK_SECRET_KEY"), "{err}");
    assert!(!err.contains("WRONG_SECRET_VALUE"), "{err}");
    assert!(!String::from_utf8_lossy(&wrong.stdout).contains("WRONG_SECRET_VALUE"));

    let bad = run(&["backfill", "--entities", "users,teams"], KEY).await;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("teams"));
    app.stop().await;
}

/// Issue 20's local-stack sequence: a backfill, the same backfill again (every event a
/// duplicate), a reconcile that deletes 3 users, then a backfill of one changed user. The
/// last two must apply within seconds, on every engine: a batch of redeliveries used to
/// cost FerretDB a trial write per statement, and left it behind for minutes.
#[tokio::test]
async fn a_second_backfill_then_reconcile_and_a_resync_apply_within_seconds() {
    let app = spawn_app(TestEnv::new().await).await;
    let fake = FakeClerk::start(KEY).await;
    fake.add_users("s", 300);
    fake.add_organizations("s", 5, |_| 2);
    let objects = 300 + 5 + 10;
    run_backfill(&app, &fake, &all(100)).await;
    wait_records(&app.db, objects, Duration::from_secs(300)).await;

    let again = run_backfill(&app, &fake, &all(100)).await;
    assert_eq!(again.published.values().sum::<u64>(), objects);
    for id in ["user_s_7", "user_s_150", "user_s_299"] {
        fake.delete_user(id);
    }
    let store = store(&app.env, &app.names).await;
    let options = reconcile::Options {
        kinds: vec![Entity::User, Entity::Organization],
        page_size: 100,
        max_deletions: None,
    };
    let mut sink = kafka_sink(&app).await;
    let report = reconcile::run(
        &api(&fake),
        &store,
        &mut sink,
        &options,
        &mut Progress::hidden(),
    )
    .await
    .unwrap();
    assert!(report.applied);
    sink.flush().await.unwrap();
    {
        let mut data = fake.data();
        let user = data
            .users
            .iter_mut()
            .find(|u| u["id"] == "user_s_42")
            .unwrap();
        user["first_name"] = "Changed".into();
        user["updated_at"] = (user["updated_at"].as_i64().unwrap() + 60_000).into();
    }
    let one = backfill::Options {
        users: vec!["user_s_42".into()],
        ..all(100)
    };
    let resync = run_backfill(&app, &fake, &one).await;
    assert_eq!(resync.published.get(&Entity::User), Some(&1));
    let published = std::time::Instant::now();

    // 3 deletions and the change: 4 new records, once the duplicates before them are done.
    wait_records(&app.db, objects + 4, Duration::from_secs(120)).await;
    let took = published.elapsed();
    eprintln!("reconcile and resync applied {took:?} after the last publish");
    let users = documents(&app.db, "users").await;
    assert_eq!(users["user_s_42"].get_str("firstName").unwrap(), "Changed");
    let deleted: usize = users
        .values()
        .filter(|d| d.get_bool("isDeleted").unwrap())
        .count();
    assert_eq!(deleted, 3);
    for id in ["user_s_7", "user_s_150", "user_s_299"] {
        assert!(users[id].get_bool("isDeleted").unwrap(), "{id}");
    }
    // Alone on FerretDB this takes about 8 s (33.9 s before snapshot batches read first);
    // beside the other suites in CI, 56 s once. The figure is printed above; the bound only
    // catches the applying getting stuck behind the redeliveries' counts again.
    assert!(took < Duration::from_secs(120), "took {took:?}");
    // Every event of the second backfill is counted a redelivery, not applied again (on
    // partitions of their own, some may still be on their way). The counts come after the
    // batches' new records, and on FerretDB each is a scan of the records: 30 s here
    // alone, more beside the other tests (309 of 315 after 64 s once, in CI). A bound for
    // "eventually", not a timing target.
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let n = count(&app.db, doc! {"origin": "backfill", "duplicates": 1}).await;
        if n == objects {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{n} redeliveries counted"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "every redelivery counted {:?} after the last publish",
        published.elapsed()
    );
    let not_applied = count(
        &app.db,
        doc! {"origin": "backfill", "outcome": {"$ne": "applied"}},
    )
    .await;
    assert_eq!(not_applied, 0, "a redelivery keeps its record's outcome");
    app.stop().await;
}
