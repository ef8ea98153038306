//! Checks of what can't run here: docker-compose.yml, deploy/ and the README, against the
//! contract's names. (No Docker engine or Kubernetes cluster on the test machines.)
#![allow(missing_docs)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_yaml::Value;

/// clerk-sync's variables, from the contract (plus `RUST_LOG`, which filters logs).
const CLERK_SYNC_VARS: &[&str] = &[
    "CLERK_WEBHOOK_SECRET",
    "KAFKA_BROKERS",
    "KAFKA_SERVICE_URI",
    "KAFKA_USERNAME",
    "KAFKA_PASSWORD",
    "KAFKA_SASL_MECHANISM",
    "KAFKA_CA_CERT",
    "KAFKA_TOPIC_USERS",
    "KAFKA_TOPIC_ORGANIZATIONS",
    "KAFKA_TOPIC_SESSIONS",
    "KAFKA_TOPIC_BILLING",
    "KAFKA_TOPIC_OTHER",
    "PUBLISH_MESSAGE_BODIES",
    "PORT",
    "WEBHOOK_QUERY_SECRET",
    "MAX_BODY_BYTES",
    "PUBLISH_TIMEOUT_MS",
    "HEADER_TIMEOUT_MS",
    "REQUEST_TIMEOUT_MS",
    "MAX_IN_FLIGHT",
    "MAX_CONNECTIONS",
    "LOG_FORMAT",
    "KAFKA_CREATE_TOPICS",
    "KAFKA_TOPIC_PARTITIONS",
    "KAFKA_REPLICATION_FACTOR",
    "RUST_LOG",
];

/// user-sync's variables, from the contract (plus `RUST_LOG`).
const USER_SYNC_VARS: &[&str] = &[
    "KAFKA_BROKERS",
    "KAFKA_SERVICE_URI",
    "KAFKA_USERNAME",
    "KAFKA_PASSWORD",
    "KAFKA_SASL_MECHANISM",
    "KAFKA_CA_CERT",
    "KAFKA_GROUP_ID",
    "KAFKA_TOPIC_USERS",
    "KAFKA_DLQ_TOPIC",
    "KAFKA_TOPIC_ORGANIZATIONS",
    "KAFKA_DLQ_TOPIC_ORGANIZATIONS",
    "KAFKA_TOPIC_SESSIONS",
    "KAFKA_DLQ_TOPIC_SESSIONS",
    "KAFKA_TOPIC_BILLING",
    "KAFKA_DLQ_TOPIC_BILLING",
    "SYNC_ENTITIES",
    "SYNC_BATCH_SIZE",
    "MONGODB_URI",
    "DATABASE_URL_ONLINE",
    "MONGODB_DATABASE",
    "MONGODB_USERS_COLLECTION",
    "MONGODB_ORGANIZATIONS_COLLECTION",
    "MONGODB_MEMBERSHIPS_COLLECTION",
    "MONGODB_SESSIONS_COLLECTION",
    "MONGODB_INVITATIONS_COLLECTION",
    "MONGODB_SUBSCRIPTIONS_COLLECTION",
    "MONGODB_SUBSCRIPTION_ITEMS_COLLECTION",
    "MONGODB_PAYMENT_ATTEMPTS_COLLECTION",
    "WEBHOOK_EVENTS_PAYLOAD",
    "WEBHOOK_EVENTS_TTL_DAYS",
    "HEALTH_PORT",
    "KAFKA_CREATE_TOPICS",
    "KAFKA_TOPIC_PARTITIONS",
    "KAFKA_REPLICATION_FACTOR",
    "LOG_FORMAT",
    "RUST_LOG",
    "LINK_COLLECTION",
    "LINK_EMAIL_FIELD",
    "LINK_CLERK_ID_FIELD",
];

const TOPICS: &[&str] = &[
    "clerk-user-events",
    "clerk-organization-events",
    "clerk-session-events",
    "clerk-billing-events",
    "clerk-other-events",
    "clerk-user-events.dlq",
    "clerk-organization-events.dlq",
    "clerk-session-events.dlq",
    "clerk-billing-events.dlq",
];

fn root() -> PathBuf {
    test_support::workspace_root()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml_docs(path: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(&read(path))
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{path}: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

fn str_of<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for key in path {
        cur = &cur[*key];
    }
    cur.as_str()
        .unwrap_or_else(|| panic!("{path:?} is not a string in {v:?}"))
}

fn env_names(service: &Value) -> BTreeSet<String> {
    service["environment"]
        .as_mapping()
        .map(|m| {
            m.keys()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn compose_file_matches_the_contract() {
    let compose: Value = serde_yaml::from_str(&read("docker-compose.yml")).unwrap();
    let services = &compose["services"];
    for name in ["kafka", "mongo", "kafka-init", "clerk-sync", "user-sync"] {
        assert!(services.get(name).is_some(), "service {name} missing");
    }
    assert!(str_of(services, &["kafka", "image"]).starts_with("apache/kafka:"));
    assert!(str_of(services, &["mongo", "image"]).starts_with("mongo:"));
    assert!(str_of(services, &["kafka-init", "image"]).starts_with("apache/kafka:"));

    // Both services run the image built from deploy/Dockerfile.
    let clerk = &services["clerk-sync"];
    let user = &services["user-sync"];
    let dockerfile = str_of(clerk, &["build", "dockerfile"]);
    let context = str_of(clerk, &["build", "context"]);
    assert!(
        root().join(context).join(dockerfile).is_file(),
        "{context}/{dockerfile}"
    );
    assert_eq!(str_of(clerk, &["image"]), str_of(user, &["image"]));
    assert!(strings(&user["entrypoint"])
        .iter()
        .any(|e| e.ends_with("/user-sync")));

    // Ports and the variables that set them agree; the host side can be moved.
    assert_eq!(
        strings(&clerk["ports"]),
        ["${CLERK_SYNC_HOST_PORT:-8788}:8788"]
    );
    assert_eq!(str_of(clerk, &["environment", "PORT"]), "8788");
    assert_eq!(
        strings(&user["ports"]),
        ["${USER_SYNC_HOST_PORT:-8789}:8789"]
    );
    assert_eq!(str_of(user, &["environment", "HEALTH_PORT"]), "8789");
    for (service, variable) in [("kafka", "KAFKA_HOST_PORT"), ("mongo", "MONGO_HOST_PORT")] {
        let ports = strings(&services[service]["ports"]);
        assert!(
            ports.len() == 1 && ports[0].starts_with(&format!("${{{variable}:-")),
            "{service}: {ports:?}"
        );
    }

    // Only contract names, and the required ones.
    for (service, allowed, required) in [
        (
            clerk,
            CLERK_SYNC_VARS,
            &["CLERK_WEBHOOK_SECRET", "KAFKA_BROKERS"][..],
        ),
        (user, USER_SYNC_VARS, &["KAFKA_BROKERS", "MONGODB_URI"][..]),
    ] {
        let names = env_names(service);
        for name in &names {
            assert!(
                allowed.contains(&name.as_str()),
                "{name} is not a contract variable"
            );
        }
        for name in required {
            assert!(names.contains(*name), "{name} missing");
        }
    }
    // The brokers and database they point at are the compose services.
    let advertised = str_of(
        services,
        &["kafka", "environment", "KAFKA_ADVERTISED_LISTENERS"],
    );
    for service in [clerk, user] {
        let brokers = str_of(service, &["environment", "KAFKA_BROKERS"]);
        assert!(
            advertised.contains(brokers),
            "{brokers} not advertised by kafka ({advertised})"
        );
    }
    assert!(str_of(user, &["environment", "MONGODB_URI"]).starts_with("mongodb://mongo:"));

    // Health checks, and start order: topics first, then the services. The image has no
    // shell: the services check themselves with their `healthcheck` subcommand.
    for name in ["kafka", "mongo", "clerk-sync", "user-sync"] {
        assert!(
            services[name]["healthcheck"]["test"].is_sequence(),
            "{name} has no healthcheck"
        );
    }
    for name in ["clerk-sync", "user-sync"] {
        assert_eq!(
            strings(&services[name]["healthcheck"]["test"]),
            ["CMD", &format!("/usr/local/bin/{name}"), "healthcheck"]
        );
    }
    assert_eq!(
        str_of(clerk, &["depends_on", "kafka-init", "condition"]),
        "service_completed_successfully"
    );
    assert_eq!(
        str_of(user, &["depends_on", "kafka-init", "condition"]),
        "service_completed_successfully"
    );
    assert_eq!(
        str_of(user, &["depends_on", "mongo", "condition"]),
        "service_healthy"
    );
    assert_eq!(
        str_of(
            services,
            &["kafka-init", "depends_on", "kafka", "condition"]
        ),
        "service_healthy"
    );
    let init = strings(&services["kafka-init"]["entrypoint"]).join(" ");
    for topic in TOPICS {
        assert!(init.contains(topic), "kafka-init does not create {topic}");
    }
}

#[test]
fn dockerfile_is_multi_stage_and_non_root() {
    let dockerfile = read("deploy/Dockerfile");
    let froms = dockerfile
        .lines()
        .filter(|l| l.trim_start().starts_with("FROM "))
        .count();
    assert!(froms >= 2, "multi-stage");
    let user = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("USER "))
        .expect("a USER line");
    assert!(
        !user.starts_with("root") && !user.starts_with("0"),
        "runs as {user}"
    );
    for bin in ["clerk-sync", "user-sync"] {
        assert!(
            dockerfile.contains(&format!("-p {bin}")),
            "{bin} is not built"
        );
    }
    // The runtime stage is distroless: nothing installed into it, no shell to run.
    let runtime = runtime_stage(&dockerfile);
    assert!(
        runtime.starts_with("\nFROM gcr.io/distroless/"),
        "{runtime}"
    );
    assert!(
        !runtime.contains("\nRUN "),
        "the runtime stage runs a command"
    );
    // The build's packages come from the one list scripts/deps.sh reads too, and from
    // nowhere else (a second list is how the two drifted apart).
    let build = &dockerfile[..dockerfile.len() - runtime.len()];
    assert!(
        build.contains("COPY scripts/system-packages "),
        "the build stage doesn't take scripts/system-packages"
    );
    let installs: Vec<&str> = build.split("apt-get install").skip(1).collect();
    assert_eq!(installs.len(), 1, "one apt-get install in the build stage");
    assert!(
        installs[0]
            .split("&&")
            .next()
            .unwrap()
            .contains("/tmp/system-packages"),
        "the build stage installs packages not from scripts/system-packages: {}",
        installs[0]
    );
    assert!(
        read("scripts/deps.sh").contains(
            "done < <(sed 's/#.*//' \"$(dirname \"${BASH_SOURCE[0]}\")/system-packages\")"
        ),
        "scripts/deps.sh doesn't read scripts/system-packages"
    );
    // One image, two programs: a HEALTHCHECK for one would fail the other (compose
    // names each service's own).
    assert!(
        !runtime.contains("\nHEALTHCHECK"),
        "an image-level health check"
    );
}

#[test]
fn every_system_package_says_what_it_is_for_and_how_to_find_it() {
    let list = read("scripts/system-packages");
    let rows: Vec<Vec<&str>> = list
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default())
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|fields| !fields.is_empty())
        .collect();
    assert!(rows.len() >= 8, "{rows:?}");
    for row in &rows {
        // package, role, probe kind, probe (scripts/deps.sh's reading)
        assert_eq!(row.len(), 4, "scripts/system-packages: {row:?}");
        assert!(["build", "scripts"].contains(&row[1]), "{row:?}: role");
        assert!(
            ["command", "header", "file"].contains(&row[2]),
            "{row:?}: probe"
        );
        if row[2] == "file" {
            assert!(
                row[3].starts_with('/'),
                "{row:?}: a file probe's absolute path"
            );
        }
    }
    let built: Vec<&str> = rows
        .iter()
        .filter(|r| r[1] == "build")
        .map(|r| r[0])
        .collect();
    for needed in ["cmake", "libssl-dev", "libcurl4-openssl-dev"] {
        assert!(
            built.contains(&needed),
            "{needed} is not a build package: {built:?}"
        );
    }
}

fn kubernetes_docs() -> Vec<Value> {
    let dir = "deploy/kubernetes";
    let mut docs = Vec::new();
    for entry in std::fs::read_dir(root().join(dir)).expect("deploy/kubernetes") {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let name = path.file_name().expect("a file name").to_string_lossy();
            let rel = format!("{dir}/{name}");
            docs.extend(yaml_docs(&rel));
        }
    }
    docs
}

/// The Dockerfile's last stage: what the image holds.
fn runtime_stage(dockerfile: &str) -> &str {
    &dockerfile[dockerfile.rfind("\nFROM ").expect("a runtime stage")..]
}

/// The files the runtime stage copies in. The base is distroless (checked above): no shell,
/// no coreutils, so these are the only programs a container of the image can execute.
fn image_programs(dockerfile: &str) -> BTreeSet<String> {
    let mut programs = BTreeSet::new();
    for args in runtime_stage(dockerfile)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("COPY "))
    {
        let words: Vec<&str> = args
            .split_whitespace()
            .filter(|w| !w.starts_with("--"))
            .collect();
        let (dest, sources) = words.split_last().expect("COPY <src>... <dest>");
        for source in sources {
            programs.insert(match dest.strip_suffix('/') {
                Some(dir) => format!("{dir}/{}", source.rsplit('/').next().unwrap_or(source)),
                None => dest.to_string(),
            });
        }
    }
    programs
}

/// Where a program name leads in the image: an absolute path as it is, a bare name through
/// the distroless image's PATH.
fn resolves_in_image(program: &str, programs: &BTreeSet<String>) -> bool {
    if program.starts_with('/') {
        return programs.contains(program);
    }
    [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ]
    .iter()
    .any(|dir| programs.contains(&format!("{dir}/{program}")))
}

/// Every program a Kubernetes manifest executes: each container's `command` (or, without
/// one, the image's ENTRYPOINT) and each `exec` handler's (hooks and probes).
fn executed_by(v: &Value, entrypoint: &str, found: &mut Vec<String>) {
    match v {
        Value::Mapping(m) => {
            if m.contains_key("image") {
                found.push(
                    strings(&v["command"])
                        .first()
                        .cloned()
                        .unwrap_or_else(|| entrypoint.to_string()),
                );
            }
            if let Some(first) = strings(&v["exec"]["command"]).first() {
                found.push(first.clone());
            }
            m.values().for_each(|x| executed_by(x, entrypoint, found));
        }
        Value::Sequence(s) => s.iter().for_each(|x| executed_by(x, entrypoint, found)),
        _ => {}
    }
}

#[test]
fn deployments_execute_only_programs_the_image_contains() {
    let dockerfile = read("deploy/Dockerfile");
    let programs = image_programs(&dockerfile);
    assert!(
        programs.contains("/usr/local/bin/clerk-sync")
            && programs.contains("/usr/local/bin/user-sync"),
        "{programs:?}"
    );
    let entrypoint = runtime_stage(&dockerfile)
        .lines()
        .find_map(|l| l.trim().strip_prefix("ENTRYPOINT "))
        .expect("an ENTRYPOINT");
    let entrypoint: Vec<String> =
        serde_json::from_str(entrypoint).expect("ENTRYPOINT in exec form");

    let mut executed = Vec::new();
    for doc in kubernetes_docs() {
        executed_by(&doc, &entrypoint[0], &mut executed);
    }
    // compose: the services built from deploy/Dockerfile, their entrypoints and health checks.
    let compose: Value = serde_yaml::from_str(&read("docker-compose.yml")).unwrap();
    let ours = str_of(&compose["services"]["clerk-sync"], &["image"]);
    for service in compose["services"].as_mapping().unwrap().values() {
        if service["image"].as_str() != Some(ours) {
            continue;
        }
        let entry = strings(&service["entrypoint"]);
        executed.push(entry.first().unwrap_or(&entrypoint[0]).clone());
        let test = strings(&service["healthcheck"]["test"]);
        match test.first().map(String::as_str) {
            Some("CMD") => executed.push(test[1].clone()),
            // CMD-SHELL runs /bin/sh, which the image doesn't have.
            Some(other) => executed.push(format!("{other} (/bin/sh)")),
            None => {}
        }
    }
    assert!(executed.len() >= 6, "{executed:?}");
    for program in &executed {
        assert!(
            resolves_in_image(program, &programs),
            "deploy executes {program}, which the image doesn't contain (it holds {programs:?})"
        );
    }
}

/// What deploy/README.md's "Graceful shutdown" says of a service, e.g. the number in
/// "`terminationGracePeriodSeconds: 45`" of the bullet that starts with **name**.
fn stated_seconds(readme: &str, service: &str, before: &str, after: &str) -> Option<u64> {
    let section = readme
        .split("### Graceful shutdown")
        .nth(1)?
        .split("\n### ")
        .next()?;
    let bullet = section
        .split("\n- ")
        .find(|b| b.starts_with(&format!("**{service}**")))?;
    let rest = bullet.split(before).nth(1)?;
    rest.split(after).next()?.trim().parse().ok()
}

#[test]
fn deploy_readme_states_the_manifests_grace_periods_and_pauses() {
    let readme = read("deploy/README.md");
    let docs = kubernetes_docs();
    let deployments: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "Deployment").collect();
    assert_eq!(deployments.len(), 2);
    for d in deployments {
        let name = str_of(d, &["metadata", "name"]);
        let pod = &d["spec"]["template"]["spec"];
        let grace = pod["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap_or_else(|| panic!("{name}: no terminationGracePeriodSeconds"));
        assert_eq!(
            stated_seconds(&readme, name, "`terminationGracePeriodSeconds: ", "`"),
            Some(grace),
            "deploy/README.md and deploy/kubernetes disagree on {name}'s grace period"
        );
        let pause = pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"].as_u64();
        assert_eq!(
            stated_seconds(&readme, name, "A `preStop` pause of ", " s"),
            pause,
            "deploy/README.md and deploy/kubernetes disagree on {name}'s preStop pause"
        );
        if let Some(pause) = pause {
            // The pause, then requests in flight and the producer's flush, as configured.
            let config = docs
                .iter()
                .find(|d| d["kind"] == "ConfigMap")
                .expect("a ConfigMap");
            let secs = |var: &str| -> u64 {
                let ms: u64 = str_of(config, &["data", var])
                    .parse()
                    .expect("milliseconds");
                ms.div_ceil(1000)
            };
            let drain = secs("REQUEST_TIMEOUT_MS") + secs("PUBLISH_TIMEOUT_MS");
            assert!(
                grace >= pause + drain,
                "{name}: {grace} s don't cover the {pause} s pause and {drain} s of draining"
            );
        }
    }
}

#[test]
fn kubernetes_manifests_have_probes_resources_and_known_variables() {
    let docs = kubernetes_docs();
    let of_kind =
        |kind: &str| -> Vec<&Value> { docs.iter().filter(|d| d["kind"] == kind).collect() };

    let config_maps: BTreeSet<&str> = of_kind("ConfigMap")
        .iter()
        .map(|d| str_of(d, &["metadata", "name"]))
        .collect();
    let secrets: BTreeSet<&str> = of_kind("Secret")
        .iter()
        .map(|d| str_of(d, &["metadata", "name"]))
        .collect();
    let all_vars: BTreeSet<&str> = CLERK_SYNC_VARS
        .iter()
        .chain(USER_SYNC_VARS)
        .copied()
        .collect();
    for d in of_kind("ConfigMap").into_iter().chain(of_kind("Secret")) {
        let data = if d["data"].is_mapping() {
            &d["data"]
        } else {
            &d["stringData"]
        };
        for key in data.as_mapping().unwrap().keys() {
            let key = key.as_str().unwrap();
            assert!(all_vars.contains(key), "{key} is not a contract variable");
        }
    }

    let deployments = of_kind("Deployment");
    for (name, port) in [("clerk-sync", 8788), ("user-sync", 8789)] {
        let d = deployments
            .iter()
            .find(|d| str_of(d, &["metadata", "name"]) == name)
            .unwrap_or_else(|| panic!("no Deployment {name}"));
        let pod = &d["spec"]["template"];
        assert_eq!(
            str_of(pod, &["metadata", "annotations", "prometheus.io/scrape"]),
            "true"
        );
        assert_eq!(
            str_of(pod, &["metadata", "annotations", "prometheus.io/port"]),
            port.to_string()
        );
        let c = &pod["spec"]["containers"][0];
        for (probe, path) in [("livenessProbe", "/health"), ("readinessProbe", "/ready")] {
            assert_eq!(
                str_of(c, &[probe, "httpGet", "path"]),
                path,
                "{name} {probe}"
            );
            let p = &c[probe]["httpGet"]["port"];
            assert!(
                p.as_u64() == Some(port) || p.as_str() == Some("http"),
                "{name} {probe} port {p:?}"
            );
        }
        assert!(c["resources"]["requests"].is_mapping() && c["resources"]["limits"].is_mapping());
        for source in c["envFrom"].as_sequence().unwrap() {
            if let Some(cm) = source["configMapRef"]["name"].as_str() {
                assert!(
                    config_maps.contains(cm),
                    "{name} refers to unknown ConfigMap {cm}"
                );
            }
            if let Some(s) = source["secretRef"]["name"].as_str() {
                assert!(secrets.contains(s), "{name} refers to unknown Secret {s}");
            }
        }
        let pdbs = of_kind("PodDisruptionBudget");
        assert!(
            pdbs.iter()
                .any(|p| p["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == name),
            "no PodDisruptionBudget for {name}"
        );
    }
    let services = of_kind("Service");
    let svc = services
        .iter()
        .find(|s| str_of(s, &["metadata", "name"]) == "clerk-sync")
        .expect("Service clerk-sync");
    let target = &svc["spec"]["ports"][0]["targetPort"];
    assert!(target.as_u64() == Some(8788) || target.as_str() == Some("http"));
}

#[test]
fn readme_starts_with_the_two_commands_and_names_every_variable() {
    let readme = read("README.md");
    let first_block = readme.split("```").nth(1).expect("a code block");
    assert!(
        first_block.contains("scripts/quickstart.sh"),
        "{first_block}"
    );
    assert!(first_block.contains("scripts/test.sh"), "{first_block}");
    assert!(
        read(".ci/run").contains("scripts/test.sh"),
        ".ci/run must call the README's test command"
    );
    for var in CLERK_SYNC_VARS.iter().chain(USER_SYNC_VARS) {
        assert!(
            readme.contains(&format!("`{var}`")),
            "README does not document {var}"
        );
    }
    for code in [
        "MISSING_HEADERS",
        "INVALID_JSON",
        "INVALID_PAYLOAD",
        "INVALID_SIGNATURE",
        "TIMESTAMP_OUT_OF_TOLERANCE",
        "INVALID_QUERY_SECRET",
        "PAYLOAD_TOO_LARGE",
        "BROKER_UNAVAILABLE",
        "INTERNAL",
    ] {
        assert!(
            readme.contains(&format!("`{code}`")),
            "README does not document {code}"
        );
    }
}

#[test]
fn every_alert_has_a_summary_a_severity_and_a_runbook_entry() {
    let rules: Value = serde_yaml::from_str(&read("deploy/monitoring/alerts.yaml")).unwrap();
    let runbook = read("deploy/README.md");
    let anchors: Vec<String> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .map(|h| {
            h.to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                    _ => None,
                })
                .collect()
        })
        .collect();
    let mut alerts = Vec::new();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let name = str_of(rule, &["alert"]);
            alerts.push(name.to_string());
            assert!(!str_of(rule, &["expr"]).trim().is_empty(), "{name}");
            assert!(
                ["page", "ticket"].contains(&str_of(rule, &["labels", "severity"])),
                "{name}"
            );
            assert!(
                !str_of(rule, &["annotations", "summary"]).is_empty(),
                "{name}"
            );
            let url = str_of(rule, &["annotations", "runbook_url"]);
            let anchor = url
                .strip_prefix("deploy/README.md#")
                .unwrap_or_else(|| panic!("{name}: {url}"));
            assert!(
                anchors.iter().any(|a| a == anchor),
                "{name}: no heading for #{anchor} in deploy/README.md"
            );
        }
    }
    // The five situations the on-call person must hear about.
    for alert in [
        "UserSyncLagGrowing",
        "UserSyncDlqReceiving",
        "ClerkSyncWebhook5xx",
        "ClerkSyncNoWebhooks",
        "UserSyncNotReady",
        "ClerkSyncNotReady",
    ] {
        assert!(alerts.iter().any(|a| a == alert), "{alert} missing");
    }
}
