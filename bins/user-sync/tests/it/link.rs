//! Linking pre-registered records (`LINK_*`): linked once, by a verified address in any
//! case; a record with another id left alone; an unverified address not linked; a record
//! added after its user linked on the user's next event.

use std::time::Duration;

use bson::{doc, Bson, Document};
use events::Record;
use test_support::TestEnv;

use crate::helpers::*;

const T0: i64 = 1_732_464_000_000;

/// Waits for `n` event records (links are recorded in the same collection).
async fn wait_events(db: &mongodb::Database, n: u64) {
    let events = db.collection::<Document>("webhook_events");
    test_support::eventually(Duration::from_secs(60), "the event records", || async {
        let count = events
            .count_documents(doc! {"type": {"$ne": "user.linked"}})
            .await
            .ok()?;
        (count == n).then_some(())
    })
    .await;
}

#[tokio::test]
async fn pre_registered_records_get_the_clerk_id_of_their_verified_address() {
    let env = TestEnv::new().await;
    let n = names(&env);
    let db = env.mongo().await.database(&n.database);
    let mentees = db.collection::<Document>("mentorados");
    let ada = mentees
        .insert_one(doc! {"name": "Ada", "contact": {"email": "Ada@Example.com"}})
        .await
        .unwrap()
        .inserted_id;
    let taken = mentees
        .insert_one(doc! {"name": "Ada's twin", "contact": {"email": "ada@example.com"}, "clerkUserId": "user_someone"})
        .await
        .unwrap()
        .inserted_id;
    // Another address: one more character, a final newline (which a pattern ending in `$`
    // would also match).
    let newline = mentees
        .insert_one(doc! {"name": "Ada?", "contact": {"email": "ada@example.com\n"}})
        .await
        .unwrap()
        .inserted_id;
    let bob = mentees
        .insert_one(doc! {"name": "Bob", "contact": {"email": "bob@example.com"}})
        .await
        .unwrap()
        .inserted_id;
    let app = spawn_app_configured(
        env,
        n,
        &[
            ("LINK_COLLECTION", "mentorados"),
            ("LINK_EMAIL_FIELD", "contact.email"),
            ("LINK_CLERK_ID_FIELD", "clerkUserId"),
        ],
    )
    .await;
    let p = producer(&app.env);
    let topic = app.names.topic.clone();

    let created = user_event(Kind::Created, "user_ada", "link_1", T0, "Ada");
    produce(&p, &topic, &created).await;
    // Bob's address isn't verified yet.
    let mut unverified = user_event(Kind::Created, "user_bob", "link_2", T0, "Bob");
    if let Record::User(user) = &mut unverified.record {
        user.email_verified = false;
    }
    produce(&p, &topic, &unverified).await;
    // A redelivery of Ada's event links nothing more.
    produce(&p, &topic, &created).await;
    wait_events(&app.db, 2).await;

    let field = |id: &Bson| {
        let mentees = mentees.clone();
        let id = id.clone();
        async move {
            let d = mentees.find_one(doc! {"_id": id}).await.unwrap().unwrap();
            d.get_str("clerkUserId").ok().map(str::to_string)
        }
    };
    test_support::eventually(
        Duration::from_secs(30),
        "the redelivery counted",
        || async {
            let r = record(&app.db, "link_1").await;
            (r.get_i32("duplicates")
                .map(i64::from)
                .or_else(|_| r.get_i64("duplicates"))
                == Ok(1))
            .then_some(())
        },
    )
    .await;
    assert_eq!(
        field(&ada).await.as_deref(),
        Some("user_ada"),
        "linked, whatever the case"
    );
    assert_eq!(
        field(&taken).await.as_deref(),
        Some("user_someone"),
        "another id stays"
    );
    assert_eq!(
        field(&bob).await,
        None,
        "an unverified address links nothing"
    );
    assert_eq!(field(&newline).await, None, "another address links nothing");
    let links = app
        .db
        .collection::<Document>("webhook_events")
        .find(doc! {"type": "user.linked"})
        .await
        .unwrap();
    let links: Vec<Document> = futures::TryStreamExt::try_collect(links).await.unwrap();
    assert_eq!(links.len(), 1, "{links:?}");
    assert_eq!(links[0].get_str("subject").unwrap(), "user_ada");
    assert_eq!(links[0].get_str("outcome").unwrap(), "linked");
    assert_eq!(
        links[0].get_document("payload").unwrap().get("recordId"),
        Some(&ada)
    );

    // A record added after its user, and Bob verifying his address: the users' next
    // events link both.
    let late = mentees
        .insert_one(doc! {"name": "Ada again", "contact": {"email": "ADA@EXAMPLE.COM"}})
        .await
        .unwrap()
        .inserted_id;
    assert_eq!(field(&late).await, None);
    produce(
        &p,
        &topic,
        &user_event(Kind::Updated, "user_ada", "link_3", T0 + 1, "Ada"),
    )
    .await;
    produce(
        &p,
        &topic,
        &user_event(Kind::Updated, "user_bob", "link_4", T0 + 1, "Bob"),
    )
    .await;
    wait_events(&app.db, 4).await;
    test_support::eventually(Duration::from_secs(30), "the late links", || async {
        (field(&late).await.as_deref() == Some("user_ada")
            && field(&bob).await.as_deref() == Some("user_bob"))
        .then_some(())
    })
    .await;
    assert_eq!(field(&ada).await.as_deref(), Some("user_ada"));
    assert_eq!(field(&taken).await.as_deref(), Some("user_someone"));
    let count = app
        .db
        .collection::<Document>("webhook_events")
        .count_documents(doc! {"type": "user.linked"})
        .await
        .unwrap();
    assert_eq!(count, 3, "ada, the late record, bob");
    app.stop().await;
}

/// A record the database refuses to link for good (PathNotViable, 28: the id field's
/// parent holds a string) stays unlinked and the stream goes on; it was retried for ever,
/// holding its partition.
#[tokio::test]
async fn a_record_that_cannot_take_the_id_is_left_unlinked_and_the_stream_goes_on() {
    let env = TestEnv::new().await;
    let n = names(&env);
    let db = env.mongo().await.database(&n.database);
    let mentees = db.collection::<Document>("mentorados");
    let stringy = mentees
        .insert_one(doc! {"name": "Ada", "email": "ada@example.com", "profile": "no object"})
        .await
        .unwrap()
        .inserted_id;
    let plain = mentees
        .insert_one(doc! {"name": "Ada again", "email": "ada@example.com"})
        .await
        .unwrap()
        .inserted_id;
    let app = spawn_app_configured(
        env,
        n,
        &[
            ("LINK_COLLECTION", "mentorados"),
            ("LINK_CLERK_ID_FIELD", "profile.clerkId"),
        ],
    )
    .await;
    let p = producer(&app.env);
    let topic = app.names.topic.clone();
    produce(
        &p,
        &topic,
        &user_event(Kind::Created, "user_ada", "link_p1", T0, "Ada"),
    )
    .await;
    produce(
        &p,
        &topic,
        &user_event(Kind::Created, "user_bob", "link_p2", T0, "Bob"),
    )
    .await;
    wait_events(&app.db, 2).await;
    let get = |id: Bson| {
        let mentees = mentees.clone();
        async move { mentees.find_one(doc! {"_id": id}).await.unwrap().unwrap() }
    };
    assert_eq!(get(stringy).await.get_str("profile"), Ok("no object"));
    let linked = get(plain).await;
    assert_eq!(
        linked
            .get_document("profile")
            .and_then(|p| p.get_str("clerkId")),
        Ok("user_ada"),
        "{linked}"
    );
    app.stop().await;
}
