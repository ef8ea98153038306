//! Checks of what can't run here: docker-compose.yml, deploy/ and the README, against the
//! contract's names. (No Docker engine or Kubernetes cluster on the test machines.)
#![allow(missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

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
    parse_yaml_docs(path, &read(path))
}

fn parse_yaml_docs(what: &str, text: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{what}: {e}")))
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

const CHART: &str = "deploy/helm/clerk-sync";
/// The chart's values with every option on (scripts/test.sh lints and renders it too).
const ALL_ON_VALUES: &str = "deploy/helm/clerk-sync/ci/all-on-values.yaml";

/// Kubernetes objects, from one source, for the checks every source must pass.
struct Manifests {
    /// Where they come from, for failure messages.
    what: String,
    docs: Vec<Value>,
    /// Secrets and ConfigMaps they may refer to without holding them: those their values
    /// name (the chart makes no Secret).
    provided: BTreeSet<String>,
}

impl Manifests {
    fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.docs.iter().filter(|d| d["kind"] == kind).collect()
    }

    fn named(&self, kind: &str, name: &str) -> &Value {
        self.of_kind(kind)
            .into_iter()
            .find(|d| d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{}: no {kind} {name}", self.what))
    }
}

/// The plain manifests, and the Helm chart rendered with its defaults and with every option
/// on: two ways to deploy, held to the same checks.
struct DeployManifests {
    plain: Manifests,
    chart_defaults: Manifests,
    chart_all_on: Manifests,
}

impl DeployManifests {
    fn each(&self) -> [&Manifests; 3] {
        [&self.plain, &self.chart_defaults, &self.chart_all_on]
    }
}

fn deploy_manifests() -> &'static DeployManifests {
    // Read and rendered once for every test.
    static MANIFESTS: OnceLock<DeployManifests> = OnceLock::new();
    MANIFESTS.get_or_init(|| DeployManifests {
        plain: Manifests {
            what: "deploy/kubernetes".to_string(),
            docs: kubernetes_docs(),
            provided: BTreeSet::new(),
        },
        chart_defaults: helm_template(None),
        chart_all_on: helm_template(Some(ALL_ON_VALUES)),
    })
}

/// `scripts/helm.sh template` of the chart, with its default values and `values` over them.
fn helm_template(values: Option<&str>) -> Manifests {
    let mut helm = Command::new(root().join("scripts/helm.sh"));
    // Without Helm, the script exits 3 instead of building it for minutes inside a test.
    helm.current_dir(root())
        .env("TOOLS_NO_BUILD", "1")
        .args(["template", "clerk-sync", CHART]);
    helm.args(values.iter().flat_map(|v| ["--values", v]));
    let out = helm.output().expect("scripts/helm.sh runs");
    assert!(
        out.status.code() != Some(3),
        "Helm isn't built: run `scripts/helm.sh install` (it builds Helm from the Go module \
         proxy once), then the tests again"
    );
    let what = format!("{CHART} with {}", values.unwrap_or("its default values"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what}: helm template failed: {stderr}"
    );
    let rendered = String::from_utf8(out.stdout).expect("helm prints UTF-8");

    let defaults = format!("{CHART}/values.yaml");
    let mut provided = BTreeSet::new();
    for file in std::iter::once(defaults.as_str()).chain(values) {
        let values: Value =
            serde_yaml::from_str(&read(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        sources_named(&values, &mut provided);
    }
    Manifests {
        docs: parse_yaml_docs(&what, &rendered),
        what,
        provided,
    }
}

/// The Secrets and ConfigMaps the chart's values name as sources of variables:
/// `existingSecret` and every `envFrom` entry.
fn sources_named(values: &Value, found: &mut BTreeSet<String>) {
    let Some(mapping) = values.as_mapping() else {
        return;
    };
    for (key, value) in mapping {
        match key.as_str() {
            Some("existingSecret") => found.extend(value.as_str().map(str::to_string)),
            Some("envFrom") => {
                for source in value.as_sequence().into_iter().flatten() {
                    for kind in ["secretRef", "configMapRef"] {
                        found.extend(source[kind]["name"].as_str().map(str::to_string));
                    }
                }
            }
            _ => sources_named(value, found),
        }
    }
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
    for doc in deploy_manifests().each().iter().flat_map(|m| &m.docs) {
        executed_by(doc, &entrypoint[0], &mut executed);
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
    for manifests in deploy_manifests().each() {
        let what = &manifests.what;
        let deployments = manifests.of_kind("Deployment");
        assert_eq!(deployments.len(), 2, "{what}");
        for d in deployments {
            let name = str_of(d, &["metadata", "name"]);
            let pod = &d["spec"]["template"]["spec"];
            let grace = pod["terminationGracePeriodSeconds"]
                .as_u64()
                .unwrap_or_else(|| panic!("{what}: {name}: no terminationGracePeriodSeconds"));
            assert_eq!(
                stated_seconds(&readme, name, "`terminationGracePeriodSeconds: ", "`"),
                Some(grace),
                "deploy/README.md and {what} disagree on {name}'s grace period"
            );
            let pause = pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"].as_u64();
            assert_eq!(
                stated_seconds(&readme, name, "A `preStop` pause of ", " s"),
                pause,
                "deploy/README.md and {what} disagree on {name}'s preStop pause"
            );
            if let Some(pause) = pause {
                // The pause, then requests in flight and the producer's flush, as configured.
                let config = manifests.of_kind("ConfigMap");
                let config = config.first().expect("a ConfigMap");
                let secs = |var: &str| -> u64 {
                    let ms: u64 = str_of(config, &["data", var])
                        .parse()
                        .expect("milliseconds");
                    ms.div_ceil(1000)
                };
                let drain = secs("REQUEST_TIMEOUT_MS") + secs("PUBLISH_TIMEOUT_MS");
                assert!(
                    grace >= pause + drain,
                    "{what}: {name}: {grace} s don't cover the {pause} s pause and {drain} s \
                     of draining"
                );
            }
        }
    }
}

#[test]
fn kubernetes_manifests_have_probes_resources_and_known_variables() {
    for manifests in deploy_manifests().each() {
        probes_resources_and_known_variables(manifests);
    }
}

fn probes_resources_and_known_variables(manifests: &Manifests) {
    let what = &manifests.what;
    let names = |kind: &str| -> BTreeSet<&str> {
        manifests
            .of_kind(kind)
            .iter()
            .map(|d| str_of(d, &["metadata", "name"]))
            .chain(manifests.provided.iter().map(String::as_str))
            .collect()
    };
    let config_maps = names("ConfigMap");
    let secrets = names("Secret");
    let all_vars: BTreeSet<&str> = CLERK_SYNC_VARS
        .iter()
        .chain(USER_SYNC_VARS)
        .copied()
        .collect();
    for d in manifests
        .of_kind("ConfigMap")
        .into_iter()
        .chain(manifests.of_kind("Secret"))
    {
        let data = if d["data"].is_mapping() {
            &d["data"]
        } else {
            &d["stringData"]
        };
        for key in data.as_mapping().expect("data").keys() {
            let key = key.as_str().expect("a variable name");
            assert!(
                all_vars.contains(key),
                "{what}: {key} is not a contract variable"
            );
        }
    }

    for (name, port) in [("clerk-sync", 8788), ("user-sync", 8789)] {
        let d = manifests.named("Deployment", name);
        let pod = &d["spec"]["template"];
        assert_eq!(
            str_of(pod, &["metadata", "annotations", "prometheus.io/scrape"]),
            "true",
            "{what}: {name}"
        );
        assert_eq!(
            str_of(pod, &["metadata", "annotations", "prometheus.io/port"]),
            port.to_string(),
            "{what}: {name}"
        );
        let c = &pod["spec"]["containers"][0];
        for (probe, path) in [("livenessProbe", "/health"), ("readinessProbe", "/ready")] {
            assert_eq!(
                str_of(c, &[probe, "httpGet", "path"]),
                path,
                "{what}: {name} {probe}"
            );
            let p = &c[probe]["httpGet"]["port"];
            assert!(
                p.as_u64() == Some(port) || p.as_str() == Some("http"),
                "{what}: {name} {probe} port {p:?}"
            );
        }
        assert!(
            c["resources"]["requests"].is_mapping() && c["resources"]["limits"].is_mapping(),
            "{what}: {name} has no resource requests and limits"
        );
        for source in c["envFrom"].as_sequence().expect("envFrom") {
            if let Some(cm) = source["configMapRef"]["name"].as_str() {
                assert!(
                    config_maps.contains(cm),
                    "{what}: {name} refers to unknown ConfigMap {cm}"
                );
            }
            if let Some(s) = source["secretRef"]["name"].as_str() {
                assert!(
                    secrets.contains(s),
                    "{what}: {name} refers to unknown Secret {s}"
                );
            }
        }
        let pdbs = manifests.of_kind("PodDisruptionBudget");
        assert!(
            pdbs.iter()
                .any(|p| p["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == name),
            "{what}: no PodDisruptionBudget for {name}"
        );
    }
    let svc = manifests.named("Service", "clerk-sync");
    let target = &svc["spec"]["ports"][0]["targetPort"];
    assert!(
        target.as_u64() == Some(8788) || target.as_str() == Some("http"),
        "{what}: Service clerk-sync targets {target:?}"
    );
}

/// A pod-template annotation only the chart has: its pods roll when the ConfigMap changes.
fn without_config_checksum(doc: &Value) -> Value {
    let mut doc = doc.clone();
    if let Some(annotations) = ["spec", "template", "metadata", "annotations"]
        .iter()
        .try_fold(&mut doc, |v, key| v.get_mut(key))
        .and_then(Value::as_mapping_mut)
    {
        annotations.remove("checksum/config");
    }
    doc
}

/// The chart's defaults render the plain manifests' objects (but the example Secret: the
/// chart reads an existing one), so the two ways to deploy can't drift apart.
#[test]
fn helm_chart_renders_the_plain_manifests_by_default() {
    let deploy = deploy_manifests();
    let by_name = |manifests: &Manifests| -> BTreeMap<String, Value> {
        manifests
            .docs
            .iter()
            .filter(|d| d["kind"] != "Secret")
            .map(|d| {
                let kind = str_of(d, &["kind"]);
                let name = str_of(d, &["metadata", "name"]);
                (format!("{kind} {name}"), without_config_checksum(d))
            })
            .collect()
    };
    let plain = by_name(&deploy.plain);
    let chart = by_name(&deploy.chart_defaults);
    assert_eq!(
        plain.keys().collect::<Vec<_>>(),
        chart.keys().collect::<Vec<_>>(),
        "deploy/kubernetes and the chart's defaults hold different objects"
    );
    for (name, doc) in &plain {
        let yaml = |v: &Value| serde_yaml::to_string(v).unwrap();
        assert!(
            chart[name] == *doc,
            "{name} differs: deploy/kubernetes has\n{}\nthe chart's defaults render\n{}",
            yaml(doc),
            yaml(&chart[name])
        );
    }
}

fn alert_groups(path: &str) -> Value {
    let rules: Value = serde_yaml::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(rules["groups"].is_sequence(), "{path}: no groups");
    rules["groups"].clone()
}

/// Helm reads no file outside the chart, so the chart holds a copy of the alert rules.
#[test]
fn helm_chart_alerts_are_deploy_monitorings() {
    assert!(
        alert_groups(&format!("{CHART}/files/alerts.yaml"))
            == alert_groups("deploy/monitoring/alerts.yaml"),
        "{CHART}/files/alerts.yaml differs from deploy/monitoring/alerts.yaml: copy it again"
    );
}

/// Whether a label selector (matchLabels, and matchExpressions with `In`) selects `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let mut match_labels = selector["matchLabels"].as_mapping().into_iter().flatten();
    let mut expressions = selector["matchExpressions"]
        .as_sequence()
        .into_iter()
        .flatten();
    match_labels.all(|(k, v)| labels[k.as_str().expect("a label name")] == *v)
        && expressions.all(|e| {
            assert_eq!(e["operator"], "In", "only `In` is read here: {e:?}");
            let value = &labels[str_of(e, &["key"])];
            e["values"].as_sequence().expect("values").contains(value)
        })
}

#[test]
fn helm_chart_monitors_both_services_with_deploy_monitorings_rules() {
    let all_on = &deploy_manifests().chart_all_on;
    let rule = all_on.named("PrometheusRule", "clerk-sync");
    assert!(
        rule["spec"]["groups"] == alert_groups("deploy/monitoring/alerts.yaml"),
        "the PrometheusRule's groups aren't deploy/monitoring/alerts.yaml's"
    );
    let monitor = all_on.named("ServiceMonitor", "clerk-sync");
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(str_of(endpoint, &["path"]), "/metrics");
    let port = str_of(endpoint, &["port"]);
    for name in ["clerk-sync", "user-sync"] {
        let service = all_on
            .of_kind("Service")
            .into_iter()
            .find(|s| {
                selects(&monitor["spec"]["selector"], &s["metadata"]["labels"])
                    && s["spec"]["selector"]["app.kubernetes.io/name"] == name
            })
            .unwrap_or_else(|| panic!("the ServiceMonitor selects no Service of {name}'s pods"));
        let ports = service["spec"]["ports"].as_sequence().unwrap();
        assert!(
            ports
                .iter()
                .any(|p| p["name"] == port && p["targetPort"] == "http"),
            "{name}'s Service has no port {port} to its metrics port: {ports:?}"
        );
    }
}

/// Each option of ci/all-on-values.yaml reaches both Deployments.
#[test]
fn helm_chart_options_reach_both_deployments() {
    let values: Value = serde_yaml::from_str(&read(ALL_ON_VALUES)).unwrap();
    let all_on = &deploy_manifests().chart_all_on;
    let account = all_on.named(
        "ServiceAccount",
        str_of(&values, &["serviceAccount", "name"]),
    );
    let image = format!(
        "{}:{}",
        str_of(&values, &["image", "repository"]),
        str_of(&values, &["image", "tag"])
    );
    for (name, service) in [("clerk-sync", "clerkSync"), ("user-sync", "userSync")] {
        let d = all_on.named("Deployment", name);
        assert_eq!(d["spec"]["replicas"], values[service]["replicas"], "{name}");
        let pod = &d["spec"]["template"];
        for key in [
            "nodeSelector",
            "affinity",
            "tolerations",
            "imagePullSecrets",
        ] {
            assert_eq!(pod["spec"][key], values[key], "{name}: {key}");
        }
        assert_eq!(
            pod["spec"]["serviceAccountName"], account["metadata"]["name"],
            "{name}"
        );
        for (key, field) in [("podLabels", "labels"), ("podAnnotations", "annotations")] {
            for (k, v) in values[key].as_mapping().unwrap() {
                let k = k.as_str().unwrap();
                assert_eq!(pod["metadata"][field][k], *v, "{name}: {key} {k}");
            }
        }
        let c = &pod["spec"]["containers"][0];
        assert_eq!(str_of(c, &["image"]), image, "{name}");
        assert_eq!(
            c["imagePullPolicy"], values["image"]["pullPolicy"],
            "{name}"
        );
    }
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
    // The reference lives in the book (docs/src), one page each.
    let configuration = read("docs/src/configuration.md");
    for var in CLERK_SYNC_VARS.iter().chain(USER_SYNC_VARS) {
        assert!(
            configuration.contains(&format!("`{var}`")),
            "docs/src/configuration.md does not document {var}"
        );
    }
    let endpoints = read("docs/src/http-endpoints.md");
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
            endpoints.contains(&format!("`{code}`")),
            "docs/src/http-endpoints.md does not document {code}"
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
        .map(test_support::markdown::anchor)
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
