//! The indexes an application already has: user-sync uses what serves it, whatever the
//! name, and stops at start-up, saying what to change, on what would break its guarantees.

use std::time::Duration;

use bson::{doc, Document};
use futures::TryStreamExt;
use mongodb::options::IndexOptions;
use mongodb::IndexModel;

use test_support::TestEnv;

use crate::helpers::*;

/// An index on `keys` named `name`, with `options` (unique, partial, …) besides.
fn index(keys: Document, name: &str, mut options: IndexOptions) -> IndexModel {
    options.name = Some(name.to_string());
    IndexModel::builder().keys(keys).options(options).build()
}

/// user-sync's start-up against the test's database: its error, if it stops.
async fn start_up_error(env: &test_support::TestEnv, n: &Names) -> Option<String> {
    let config = user_sync::Config::from_vars(vars(env, n, &[])).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let health = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let mut run = tokio::spawn(user_sync::run_until(config, listener, async {
        let _ = rx.await;
    }));
    // Ready (it started), or finished (it stopped at start-up), whichever comes first.
    let ready = async {
        loop {
            if let Ok(r) = reqwest::get(format!("{health}/ready")).await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::select! {
        () = ready => {
            let _ = tx.send(());
            run.await.unwrap().unwrap();
            None
        }
        result = tokio::time::timeout(Duration::from_secs(60), &mut run) => {
            let result = result.expect("start-up neither ends nor gets ready").unwrap();
            Some(result.expect_err("user-sync ended without being asked").to_string())
        }
    }
}

/// An index with the keys user-sync wants, under the application's own name (Prisma's
/// `Session_userId_idx`), is used: MongoDB (and FerretDB) refuse a second one on the same
/// keys with IndexOptionsConflict, which used to stop start-up.
#[tokio::test]
async fn an_index_with_the_keys_user_sync_wants_is_used_under_its_own_name() {
    let env = TestEnv::new().await;
    let n = names(&env);
    let sessions = env
        .mongo()
        .await
        .database(&n.database)
        .collection::<Document>("sessions");
    sessions
        .create_index(index(
            doc! {"userId": 1},
            "Session_userId_idx",
            IndexOptions::default(),
        ))
        .await
        .unwrap();
    assert_eq!(start_up_error(&env, &n).await, None);
    let names: Vec<String> = sessions
        .list_index_names()
        .await
        .unwrap()
        .into_iter()
        .filter(|i| i.to_lowercase().contains("userid"))
        .collect();
    assert_eq!(names, ["Session_userId_idx"], "no second index on userId");
}

/// A unique `clerkId` index that is partial (a soft-delete filter) would let an upsert
/// insert a second document for a deleted user: start-up stops and says why.
/// (FerretDB v1 can't make a partial index; mongo-java-server, in CI's second run, can.)
#[tokio::test]
async fn a_partial_clerk_id_index_stops_start_up() {
    let env = TestEnv::new().await;
    let n = names(&env);
    let users = env
        .mongo()
        .await
        .database(&n.database)
        .collection::<Document>("users");
    let partial = index(
        doc! {"clerkId": 1},
        "User_clerkId_live",
        IndexOptions::builder()
            .unique(true)
            .partial_filter_expression(doc! {"isDeleted": false})
            .build(),
    );
    if let Err(e) = users.create_index(partial).await {
        eprintln!("this server can't make a partial index ({e}); nothing to check here");
        return;
    }
    let err = start_up_error(&env, &n).await.expect("start-up stops");
    assert!(
        err.contains("User_clerkId_live") && err.contains("partial"),
        "{err}"
    );
    let kept: Vec<Document> = users
        .list_indexes()
        .await
        .unwrap()
        .try_collect::<Vec<IndexModel>>()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.keys)
        .collect();
    assert_eq!(kept.iter().filter(|k| k.contains_key("clerkId")).count(), 1);
}

/// An application's unique index on a field user-sync writes null (an ORM's `email
/// @unique`) counts every user without an email as one: the second tombstone would be
/// refused, and a deleted user could come back. Start-up stops and names the partial index
/// that works. (FerretDB can't make a partial index: there user-sync warns and starts.)
#[tokio::test]
async fn a_unique_index_that_counts_missing_emails_as_one_stops_start_up() {
    let env = TestEnv::new().await;
    let n = names(&env);
    let db = env.mongo().await.database(&n.database);
    let unique = IndexOptions::builder().unique(true).build();
    db.collection::<Document>("users")
        .create_index(index(doc! {"email": 1}, "User_email_key", unique))
        .await
        .unwrap();
    let build = db.run_command(doc! {"buildInfo": 1}).await.unwrap();
    let err = start_up_error(&env, &n).await;
    if build.contains_key("ferretdbVersion") {
        assert_eq!(err, None, "FerretDB: a warning, not a stop");
        return;
    }
    let err = err.expect("start-up stops");
    assert!(
        err.contains("User_email_key") && err.contains("partialFilterExpression"),
        "{err}"
    );
}

/// With the partial index start-up asks for, users without an email coexist: the
/// tombstones of two users user-sync never saw are both kept. Runs where the server honours
/// a partial index's filter (MongoDB, DocumentDB); FerretDB v1 can't make one and
/// mongo-java-server counts nulls anyway, so there it checks nothing (and says so).
#[tokio::test]
async fn with_the_partial_index_users_without_an_email_are_all_kept() {
    let env = TestEnv::new().await;
    let n = names(&env);
    let db = env.mongo().await.database(&n.database);
    let partial = || {
        let options = IndexOptions::builder()
            .unique(true)
            .partial_filter_expression(doc! {"email": {"$type": "string"}})
            .build();
        index(doc! {"email": 1}, "User_email_key", options)
    };
    // Does this server honour the filter? Two documents without an email, in a scratch
    // collection under the same index.
    let probe = db.collection::<Document>("probe");
    let honoured = probe.create_index(partial()).await.is_ok()
        && probe
            .insert_many([doc! {"email": null}, doc! {"email": null}])
            .await
            .is_ok();
    if !honoured {
        eprintln!("this server doesn't honour partial indexes; nothing to check here");
        return;
    }
    db.collection::<Document>("users")
        .create_index(partial())
        .await
        .unwrap();
    let app = spawn_app_with(env, n).await;
    let p = producer(&app.env);
    let topic = app.names.topic.clone();
    for (user, event) in [("user_gone_1", "gone_1"), ("user_gone_2", "gone_2")] {
        let deleted = user_event(Kind::Deleted, user, event, 1_732_464_000_000, "");
        produce(&p, &topic, &deleted).await;
    }
    wait_records(&app.db, 2, Duration::from_secs(60)).await;
    for event in ["gone_1", "gone_2"] {
        assert_eq!(
            record(&app.db, event).await.get_str("outcome"),
            Ok("applied")
        );
    }
    let tombstones = app
        .db
        .collection::<Document>("users")
        .count_documents(doc! {"isDeleted": true, "email": null})
        .await
        .unwrap();
    assert_eq!(tombstones, 2);
    app.stop().await;
}
