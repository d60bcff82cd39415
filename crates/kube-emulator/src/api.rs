//! API semantics over the store: create/update/patch/delete with the behaviours of a real
//! API server (metadata, conflicts, namespaces, finalizers, status subresources, Service IP
//! allocation, PV/PVC binding, default ServiceAccounts, CRD registration).
//!
//! Runs with the state lock held and does no I/O; asynchronous follow-ups (CRD establishment,
//! namespace cleanup) are queued in `State::after` for the server to schedule.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use base64::Engine;
use serde_json::{Map, Value, json};

use crate::catalog::{Catalog, ResKey, ResourceDef, is_builtin_group};
use crate::schema::{self, Cause};
use crate::store::{EventType, ObjKey, Store};

/// Static configuration of one emulator.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub crd_delay: Duration,
    pub cidr_base: u32,
    pub cidr_size: u32,
    pub legacy_tokens: bool,
    /// The release played: other code asks it for release-specific behaviour.
    pub server_version: crate::ServerVersion,
}

/// An error answered as a `Status` object.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub fn with_details(mut self, name: &str, group: &str, kind: &str) -> Self {
        let mut d = json!({"name": name, "kind": kind});
        if !group.is_empty() {
            d["group"] = json!(group);
        }
        self.details = Some(d);
        self
    }

    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", msg)
    }

    pub fn not_found(def: &ResourceDef, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(def)),
        )
        .with_details(name, &def.group, &def.plural)
    }

    pub fn gone(rv: u64, compacted: u64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {rv} ({compacted})"),
        )
    }

    pub fn invalid(def: &ResourceDef, name: &str, field: &str, msg: String) -> Self {
        Self::invalid_causes(
            def,
            name,
            &[Cause {
                reason: "FieldValueInvalid",
                field: field.to_string(),
                message: msg,
            }],
        )
    }

    /// A real server's 422 for field errors: `Kind.group "name" is invalid: <cause>` (several
    /// causes in brackets), each cause also in `details.causes[]`.
    pub fn invalid_causes(def: &ResourceDef, name: &str, causes: &[Cause]) -> Self {
        let texts: Vec<String> = causes.iter().map(Cause::text).collect();
        let joined = if texts.len() == 1 {
            texts[0].clone()
        } else {
            format!("[{}]", texts.join(", "))
        };
        let kind = if def.group.is_empty() {
            def.kind.clone()
        } else {
            format!("{}.{}", def.kind, def.group)
        };
        let mut e = Self::new(
            422,
            "Invalid",
            format!("{kind} \"{name}\" is invalid: {joined}"),
        )
        .with_details(name, &def.group, &def.kind);
        if let Some(d) = e.details.as_mut() {
            d["causes"] = Value::Array(
                causes
                    .iter()
                    .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                    .collect(),
            );
        }
        e
    }

    /// The `Status` body.
    pub fn body(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        // `StatusReasonUnknown` is the empty reason, which a real server omits.
        if self.reason.is_empty()
            && let Some(o) = v.as_object_mut()
        {
            o.remove("reason");
        }
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }
}

/// A real server's 422 for bad `PatchOptions` (`fieldManager`, `force`).
fn patch_options_invalid(reason: &'static str, field: &str, msg: &str) -> ApiError {
    let mut e = ApiError::new(
        422,
        "Invalid",
        format!("PatchOptions.meta.k8s.io \"\" is invalid: {field}: {msg}"),
    );
    e.details = Some(json!({"group": "meta.k8s.io", "kind": "PatchOptions",
        "causes": [{"reason": reason, "message": msg, "field": field}]}));
    e
}

/// `configmaps` or `deployments.apps`.
pub(crate) fn qualified(def: &ResourceDef) -> String {
    if def.group.is_empty() {
        def.plural.clone()
    } else {
        format!("{}.{}", def.plural, def.group)
    }
}

/// Options of one write request.
#[derive(Debug, Clone, Default)]
pub(crate) struct WriteOpts {
    pub dry_run: bool,
    pub manager: String,
    /// Whether the request named its `fieldManager` (required for apply).
    pub explicit_manager: bool,
    /// The `force` query parameter, when given (apply only).
    pub force: Option<bool>,
    /// Keep the given uid and creationTimestamp (fixture seeding).
    pub keep_identity: bool,
    /// `managedFields` an apply computed: stored as they are.
    pub managed: Option<Value>,
}

/// A follow-up the server runs after releasing the lock.
#[derive(Debug, Clone)]
pub(crate) enum After {
    EstablishCrd(String),
    FinishNamespace(String),
    /// Bind a new Pod (namespace, name) to a Node.
    SchedulePod(String, String),
}

/// Everything behind the lock: objects, served resources and allocations.
pub(crate) struct State {
    pub store: Store,
    pub catalog: Catalog,
    pub config: Config,
    pub after: Vec<After>,
    ips: HashMap<u32, ObjKey>,
    node_ports: HashMap<u16, ObjKey>,
    ip_cursor: u32,
    port_cursor: u16,
}

pub(crate) fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

pub(crate) fn new_uid() -> String {
    let n = fastrand::u128(..);
    let h = format!("{n:032x}");
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

fn random_suffix(n: usize) -> String {
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..n)
        .map(|_| ALPHA[fastrand::usize(..ALPHA.len())] as char)
        .collect()
}

#[allow(
    clippy::expect_used,
    reason = "an invariant: the object was made just above"
)]
fn meta(v: &mut Value) -> &mut Map<String, Value> {
    if !v["metadata"].is_object() {
        v["metadata"] = json!({});
    }
    v["metadata"]
        .as_object_mut()
        .expect("metadata was just made an object")
}

fn str_of<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_str().unwrap_or_default()
}

fn spec_part(v: &Value) -> Value {
    let mut c = v.clone();
    if let Some(m) = c.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    c
}

fn manager_of(opts: &WriteOpts) -> &str {
    if opts.manager.is_empty() {
        "unknown"
    } else {
        &opts.manager
    }
}

/// Puts an apply's `managedFields` into the object to store (none when empty).
fn set_managed(obj: &mut Value, managed: &Value) {
    let m = meta(obj);
    if managed.as_array().is_some_and(|a| !a.is_empty()) {
        m.insert("managedFields".into(), managed.clone());
    } else {
        m.remove("managedFields");
    }
}

/// Parse `a.b.c.d/n` into (network base, number of addresses).
pub(crate) fn parse_cidr(cidr: &str) -> Result<(u32, u32), String> {
    let (ip, bits) = cidr
        .split_once('/')
        .ok_or_else(|| format!("service CIDR {cidr:?} is not of the form a.b.c.d/n"))?;
    let ip: Ipv4Addr = ip
        .parse()
        .map_err(|_| format!("service CIDR {cidr:?}: bad address"))?;
    let bits: u32 = bits
        .parse()
        .map_err(|_| format!("service CIDR {cidr:?}: bad prefix length"))?;
    if !(8..=30).contains(&bits) {
        return Err(format!(
            "service CIDR {cidr:?}: prefix length must be within 8..=30"
        ));
    }
    let mask = u32::MAX << (32 - bits);
    Ok((u32::from(ip) & mask, 1u32 << (32 - bits)))
}

impl State {
    pub fn new(config: Config, window: u64) -> Self {
        State {
            store: Store::new(window),
            catalog: config.server_version.catalog(),
            config,
            after: Vec::new(),
            ips: HashMap::new(),
            node_ports: HashMap::new(),
            ip_cursor: 10,
            port_cursor: 0,
        }
    }

    #[allow(
        clippy::expect_used,
        reason = "an invariant: only built-in resources are asked for"
    )]
    fn def(&self, group: &str, plural: &str) -> ResourceDef {
        self.catalog
            .find_any(group, plural)
            .cloned()
            .expect("built-in resource is always in the catalogue")
    }

    /// The namespace check of a namespaced create.
    fn check_namespace(&self, def: &ResourceDef, ns: &str, name: &str) -> Result<(), ApiError> {
        let nsres = ResKey {
            group: String::new(),
            plural: "namespaces".into(),
        };
        match self.store.get(&nsres, "", ns) {
            None => Err(
                ApiError::new(404, "NotFound", format!("namespaces \"{ns}\" not found"))
                    .with_details(ns, "", "namespaces"),
            ),
            Some(o) => {
                let v = o.value();
                if !v["metadata"]["deletionTimestamp"].is_null() {
                    Err(ApiError::new(
                        403,
                        "Forbidden",
                        format!(
                            "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                            qualified(def)
                        ),
                    )
                    .with_details(name, &def.group, &def.plural))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Validate a body against the URL and normalise apiVersion/kind/namespace.
    fn check_body(
        def: &ResourceDef,
        ns: &str,
        body: &mut Value,
        url_name: Option<&str>,
    ) -> Result<(), ApiError> {
        if !body.is_object() {
            return Err(ApiError::bad_request(format!(
                "the body of the request for {} is not a JSON object",
                qualified(def)
            )));
        }
        let av = def.api_version();
        match body["apiVersion"].as_str() {
            Some(a) if a != av => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({a}) does not match the expected API version ({av})"
                )));
            }
            _ => body["apiVersion"] = json!(av),
        }
        match body["kind"].as_str() {
            Some(k) if k != def.kind => {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    def.kind
                )));
            }
            _ => body["kind"] = json!(def.kind),
        }
        let m = meta(body);
        if def.namespaced {
            match m.get("namespace").and_then(Value::as_str) {
                Some(n) if !n.is_empty() && n != ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => {
                    m.insert("namespace".into(), json!(ns));
                }
            }
        } else {
            m.remove("namespace");
        }
        if let Some(url_name) = url_name {
            match m.get("name").and_then(Value::as_str) {
                Some(n) if !n.is_empty() && n != url_name => {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({n}) does not match the name on the URL ({url_name})"
                    )));
                }
                _ => {
                    m.insert("name".into(), json!(url_name));
                }
            }
        }
        Ok(())
    }

    /// POST.
    pub fn create(
        &mut self,
        def: &ResourceDef,
        ns: &str,
        mut body: Value,
        opts: &WriteOpts,
    ) -> Result<Value, ApiError> {
        Self::check_body(def, ns, &mut body, None)?;
        crate::convert::drop_unknown_fields(
            &def.group,
            &def.version,
            self.config.server_version.minor(),
            &mut body,
        );
        let ns = if def.namespaced { ns } else { "" };
        let mut name = str_of(&body, &["metadata", "name"]).to_string();
        if name.is_empty() {
            let gen_name = str_of(&body, &["metadata", "generateName"]).to_string();
            if gen_name.is_empty() {
                return Err(ApiError::invalid(
                    def,
                    "",
                    "metadata.name",
                    "Required value: name or generateName is required".into(),
                ));
            }
            loop {
                name = format!("{gen_name}{}", random_suffix(5));
                if self.store.get(&def.key(), ns, &name).is_none() {
                    break;
                }
            }
        }
        if def.namespaced {
            self.check_namespace(def, ns, &name)?;
        }
        // A real server's storage refuses a create carrying a resourceVersion (one that parses
        // as a non-zero number: "0" and unparsable ones pass) with a plain error, answered as
        // a 500 without a reason.
        if !opts.keep_identity
            && str_of(&body, &["metadata", "resourceVersion"])
                .parse::<u64>()
                .is_ok_and(|rv| rv != 0)
        {
            return Err(ApiError::new(
                500,
                "",
                "resourceVersion should not be set on objects to be created",
            ));
        }
        // The name a `generateName` gave is validated like a given one (after the namespace's
        // admission, before storage's AlreadyExists, as on a real server).
        meta(&mut body).insert("name".into(), json!(name));
        let causes = crate::meta::check_create(def, &body, self.config.server_version.minor());
        if !causes.is_empty() {
            return Err(ApiError::invalid_causes(def, &name, &causes));
        }
        if self.store.get(&def.key(), ns, &name).is_some() {
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", qualified(def)),
            )
            .with_details(&name, &def.group, &def.plural));
        }
        let m = meta(&mut body);
        m.insert("name".into(), json!(name));
        m.remove("resourceVersion");
        m.remove("deletionTimestamp");
        m.remove("deletionGracePeriodSeconds");
        if !opts.keep_identity {
            m.insert("uid".into(), json!(new_uid()));
            m.insert("creationTimestamp".into(), json!(now()));
        }
        if m.get("uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .is_empty()
        {
            m.insert("uid".into(), json!(new_uid()));
        }
        if m.get("creationTimestamp").is_none_or(Value::is_null) {
            m.insert("creationTimestamp".into(), json!(now()));
        }
        let keep = |m: &Map<String, Value>, f: &str| {
            opts.keep_identity && m.get(f).is_some_and(|v| !v.is_null())
        };
        let wants_generation =
            body.get("spec").is_some() || !def.group.is_empty() && !is_builtin_group(&def.group);
        let m = meta(&mut body);
        if wants_generation && !keep(m, "generation") {
            m.insert("generation".into(), json!(1));
        }
        let keep_managed = keep(m, "managedFields");
        if def.has_status()
            && let Some(o) = body.as_object_mut()
        {
            o.remove("status");
        }
        match &opts.managed {
            Some(managed) => set_managed(&mut body, managed),
            None if keep_managed => {}
            None => {
                let schema = self.cr_schema(def);
                let ctx = self.fields_ctx(def, schema.as_ref(), &def.api_version(), None);
                crate::fields::record_update(&ctx, None, &mut body, manager_of(opts), &now());
            }
        }
        self.check_custom_resource(def, &name, &mut body)?;
        if def.group.is_empty() && def.plural == "pods" && !opts.keep_identity {
            self.admit_pod(def, ns, &name, &mut body)?;
        }
        if def.group == "scheduling.k8s.io"
            && def.plural == "priorityclasses"
            && !opts.keep_identity
        {
            let classes: Vec<Value> = self
                .store
                .current(&def.key(), None)
                .into_iter()
                .map(|(_, o)| o.value())
                .collect();
            if let Err(crate::admission::Refusal::Forbidden(message)) =
                crate::admission::admit_priority_class(&body, &classes)
            {
                return Err(ApiError::new(
                    403,
                    "Forbidden",
                    format!("{} \"{name}\" is forbidden: {message}", qualified(def)),
                )
                .with_details(&name, &def.group, &def.plural));
            }
        }
        if !opts.keep_identity {
            self.call_webhooks("CREATE", def, ns, &name, &body, None)?;
        }
        self.prepare_create(def, ns, &name, &mut body, opts.dry_run)?;
        if opts.dry_run {
            return Ok(body);
        }
        let (_, out) = self
            .store
            .put(&def.key(), ns, &name, body, EventType::Added);
        self.after_create(def, ns, &name, &out);
        if def.group.is_empty() && def.plural == "services" && !opts.keep_identity {
            self.make_endpoints(ns, &name, &out);
        }
        Ok(self
            .store
            .get(&def.key(), ns, &name)
            .map(|s| s.value())
            .unwrap_or(out))
    }

    /// A new Pod's admission (`crate::admission`: ServiceAccount, Priority, ephemeral
    /// containers), with what it looks up read from the store.
    fn admit_pod(
        &self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        body: &mut Value,
    ) -> Result<(), ApiError> {
        let get = |plural: &str, ns: &str, name: &str| {
            self.store
                .get(&self.def("", plural).key(), ns, name)
                .map(|o| o.value())
        };
        let service_account = |n: &str| get("serviceaccounts", ns, n);
        let secret = |n: &str| get("secrets", ns, n);
        let priority_classes = || {
            let key = self.def("scheduling.k8s.io", "priorityclasses").key();
            self.store
                .current(&key, None)
                .into_iter()
                .map(|(_, o)| o.value())
                .collect()
        };
        let suffix = || random_suffix(5);
        let lookups = crate::admission::Lookups {
            minor: self.config.server_version.minor(),
            service_account: &service_account,
            secret: &secret,
            priority_classes: &priority_classes,
            suffix: &suffix,
        };
        let shown = match str_of(body, &["metadata", "generateName"]) {
            "" => name.to_string(),
            prefix => prefix.to_string(),
        };
        match crate::admission::admit_pod(ns, body, &lookups) {
            Ok(()) => Ok(()),
            Err(crate::admission::Refusal::Forbidden(message)) => Err(ApiError::new(
                403,
                "Forbidden",
                format!("{} \"{shown}\" is forbidden: {message}", def.plural),
            )
            .with_details(&shown, &def.group, &def.plural)),
            Err(crate::admission::Refusal::ServerTimeout(message)) => {
                let mut e = ApiError::new(504, "ServerTimeout", message);
                e.details = Some(
                    json!({"name": "create pod", "kind": "serviceaccounts", "retryAfterSeconds": 1}),
                );
                Err(e)
            }
            Err(crate::admission::Refusal::Invalid(causes)) => {
                Err(ApiError::invalid_causes(def, name, &causes))
            }
        }
    }

    /// The admission webhooks of the stored configurations on a write (`crate::webhooks`):
    /// the 500 of the first that intercepts it and fails.
    fn call_webhooks(
        &self,
        operation: &str,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        obj: &Value,
        sub: Option<&str>,
    ) -> Result<(), ApiError> {
        let mut configs = Vec::new();
        for plural in [
            "mutatingwebhookconfigurations",
            "validatingwebhookconfigurations",
        ] {
            let Some(d) = self
                .catalog
                .find_any("admissionregistration.k8s.io", plural)
            else {
                continue;
            };
            configs.extend(
                self.store
                    .current(&d.key(), None)
                    .into_iter()
                    .map(|(_, o)| o.value()),
            );
        }
        if configs.is_empty() {
            return Ok(());
        }
        let resource = match sub {
            Some(s) => format!("{}/{s}", def.plural),
            None => def.plural.clone(),
        };
        let req = crate::webhooks::Request {
            operation,
            group: &def.group,
            version: &def.version,
            resource: &resource,
            namespace: if def.namespaced { ns } else { "" },
            object: obj,
        };
        let namespace = if def.namespaced {
            self.store
                .get(&self.def("", "namespaces").key(), "", ns)
                .map(|o| o.value())
        } else {
            None
        };
        let ns_labels: Vec<(&str, &str)> = namespace
            .as_ref()
            .and_then(|n| n.pointer("/metadata/labels"))
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
            .collect();
        let services = self.def("", "services").key();
        let service_exists = |ns: &str, svc: &str| self.store.get(&services, ns, svc).is_some();
        match crate::webhooks::refusal(&configs, &req, &ns_labels, &service_exists) {
            None => Ok(()),
            Some(reason) => {
                let mut e = ApiError::new(
                    500,
                    "InternalError",
                    format!("Internal error occurred: {reason}"),
                );
                e.details = Some(json!({"name": name, "group": def.group, "kind": def.plural,
                    "causes": [{"message": reason}]}));
                Err(e)
            }
        }
    }

    /// The 422 of an Event a real server refuses at the version it was sent to (`def`).
    pub fn check_event_create(&self, def: &ResourceDef, body: &Value) -> Result<(), ApiError> {
        if def.plural != "events" || !(def.group.is_empty() || def.group == "events.k8s.io") {
            return Ok(());
        }
        let minor = self.config.server_version.minor();
        let causes = crate::events::check_create(&def.group, &def.version, body, minor);
        if causes.is_empty() {
            return Ok(());
        }
        let name = match str_of(body, &["metadata", "name"]) {
            "" => str_of(body, &["metadata", "generateName"]),
            n => n,
        };
        Err(ApiError::invalid_causes(def, name, &causes))
    }

    /// Kind-specific defaulting and validation before a create is stored.
    fn prepare_create(
        &mut self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        body: &mut Value,
        dry_run: bool,
    ) -> Result<(), ApiError> {
        match (def.group.as_str(), def.plural.as_str()) {
            ("", "namespaces") => {
                body["spec"] = json!({"finalizers": ["kubernetes"]});
                body["status"] = json!({"phase": "Active"});
                let m = meta(body);
                if !m.get("labels").is_some_and(Value::is_object) {
                    m.insert("labels".into(), json!({}));
                }
                m["labels"]["kubernetes.io/metadata.name"] = json!(name);
            }
            ("", "services") => self.prepare_service(def, ns, name, body, None, dry_run)?,
            ("apiregistration.k8s.io", "apiservices")
                if body.pointer("/spec/service").is_some_and(Value::is_object) =>
            {
                let svc = |f: &str| {
                    body.pointer(&format!("/spec/service/{f}"))
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string()
                };
                let services = self.def("", "services").key();
                let exists = self
                    .store
                    .get(&services, &svc("namespace"), &svc("name"))
                    .is_some();
                body["status"] = crate::aggregation::unavailable_status(body, exists);
            }
            ("", "persistentvolumes") => body["status"] = json!({"phase": "Available"}),
            ("", "persistentvolumeclaims") => body["status"] = json!({"phase": "Pending"}),
            ("", "pods") => body["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"}),
            ("batch", "jobs") => {
                crate::jobs::prepare_create(body, name, self.config.server_version.minor() >= 27)?
            }
            ("apiextensions.k8s.io", "customresourcedefinitions") => {
                self.check_crd(def, name, body)?;
                let names = body["spec"]["names"].clone();
                let stored: Vec<Value> = body["spec"]["versions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|v| v["storage"].as_bool() == Some(true))
                    .map(|v| v["name"].clone())
                    .collect();
                body["status"] =
                    json!({"conditions": [], "acceptedNames": names, "storedVersions": stored});
            }
            _ => {}
        }
        Ok(())
    }

    /// Behaviours of the emulated server release.
    fn quirks(&self) -> schema::Quirks {
        schema::Quirks {
            empty_string_default_is_null: self.config.server_version.minor() < 20,
        }
    }

    /// Refuses a CRD whose schemas a real server refuses (structural rules, defaults).
    fn check_crd(&self, def: &ResourceDef, name: &str, crd: &Value) -> Result<(), ApiError> {
        let causes = schema::check_crd(crd, self.quirks());
        if causes.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid_causes(def, name, &causes))
        }
    }

    /// The structural schema of a custom resource's version (`None` for built-ins and CRs
    /// without one).
    fn cr_schema(&self, def: &ResourceDef) -> Option<Value> {
        if is_builtin_group(&def.group) {
            return None;
        }
        let crds = ResKey {
            group: "apiextensions.k8s.io".into(),
            plural: "customresourcedefinitions".into(),
        };
        let crd = self
            .store
            .get(&crds, "", &format!("{}.{}", def.plural, def.group))?
            .value();
        schema::version_schema(&crd, &def.version).cloned()
    }

    /// How a write to `def` (at `api_version`, on subresource `sub`) records field ownership.
    fn fields_ctx<'a>(
        &self,
        def: &ResourceDef,
        schema: Option<&'a Value>,
        api_version: &str,
        sub: Option<&str>,
    ) -> crate::fields::Ctx<'a> {
        let root = if is_builtin_group(&def.group) {
            crate::fields::Ty::Builtin("")
        } else {
            crate::fields::Ty::CrRoot(schema)
        };
        let status = sub == Some("status");
        crate::fields::Ctx {
            root,
            api_version: api_version.to_string(),
            subresource: match sub {
                Some(s) if self.config.server_version.managed_fields_subresource() => s.to_string(),
                _ => String::new(),
            },
            ignored: if status {
                Some("spec")
            } else if def.has_status() {
                Some("status")
            } else {
                None
            },
        }
    }

    /// Prunes, defaults and validates a custom resource against the schema of its CRD's
    /// version, as a real server does on every create, update, patch and `/status` write.
    fn check_custom_resource(
        &self,
        def: &ResourceDef,
        name: &str,
        obj: &mut Value,
    ) -> Result<(), ApiError> {
        if is_builtin_group(&def.group) {
            return Ok(());
        }
        let crds = ResKey {
            group: "apiextensions.k8s.io".into(),
            plural: "customresourcedefinitions".into(),
        };
        let Some(crd) = self
            .store
            .get(&crds, "", &format!("{}.{}", def.plural, def.group))
        else {
            return Ok(());
        };
        let crd = crd.value();
        let Some(schema) = schema::version_schema(&crd, &def.version) else {
            return Ok(());
        };
        let causes = schema::check_custom_resource(schema, obj, schema::crd_prunes(&crd));
        if causes.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid_causes(def, name, &causes))
        }
    }

    /// The endpoints controller on a new Service with a selector: an Endpoints object of the
    /// same name and labels, without subsets (the emulator runs no Pods that could be ready).
    /// Fixture Services bring their own.
    fn make_endpoints(&mut self, ns: &str, name: &str, svc: &Value) {
        let has_selector = svc
            .pointer("/spec/selector")
            .and_then(Value::as_object)
            .is_some_and(|m| !m.is_empty());
        if !has_selector {
            return;
        }
        let mut metadata = json!({"name": name,
            "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": now()}});
        if let Some(labels) = svc.pointer("/metadata/labels").filter(|l| l.is_object()) {
            metadata["labels"] = labels.clone();
        }
        let ep = self.def("", "endpoints");
        let internal = WriteOpts {
            manager: "kube-controller-manager".into(),
            ..Default::default()
        };
        let _ = self.create(
            &ep,
            ns,
            json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": metadata}),
            &internal,
        );
    }

    /// Side effects of a stored create.
    fn after_create(&mut self, def: &ResourceDef, ns: &str, name: &str, obj: &Value) {
        let internal = WriteOpts {
            manager: "kube-controller-manager".into(),
            ..Default::default()
        };
        match (def.group.as_str(), def.plural.as_str()) {
            ("", "namespaces") => {
                let sa = self.def("", "serviceaccounts");
                let _ = self.create(
                    &sa,
                    name,
                    json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}}),
                    &internal,
                );
                // The root CA publisher (feature gate `RootCAConfigMap`) is on by default
                // from 1.20 only.
                let cm = self.def("", "configmaps");
                let _ = (self.config.server_version.minor() >= 20).then(|| {
                    self.create(
                    &cm,
                    name,
                    json!({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": "kube-root-ca.crt", "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
                        "data": {"ca.crt": EMULATOR_CA}}),
                    &internal,
                )
                });
            }
            ("", "pods") => {
                if self.config.crd_delay.is_zero() {
                    self.schedule_pod(ns, name);
                } else {
                    self.after
                        .push(After::SchedulePod(ns.to_string(), name.to_string()));
                }
            }
            ("", "serviceaccounts") if self.config.legacy_tokens => {
                let secret_name = format!("{name}-token-{}", random_suffix(5));
                let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
                let secret = json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
                    "metadata": {"name": secret_name, "annotations": {
                        "kubernetes.io/service-account.name": name,
                        "kubernetes.io/service-account.uid": str_of(obj, &["metadata", "uid"])}},
                    "data": {"token": b64("emulated-service-account-token"), "ca.crt": b64(EMULATOR_CA), "namespace": b64(ns)}});
                let sdef = self.def("", "secrets");
                if self.create(&sdef, ns, secret, &internal).is_ok() {
                    let mut sa = obj.clone();
                    let mut secrets = sa["secrets"].as_array().cloned().unwrap_or_default();
                    secrets.push(json!({"name": secret_name}));
                    sa["secrets"] = json!(secrets);
                    self.store
                        .put(&def.key(), ns, name, sa, EventType::Modified);
                }
            }
            ("", "persistentvolumes") => self.rebind_pv(name),
            ("", "persistentvolumeclaims") => {
                let vol = str_of(obj, &["spec", "volumeName"]).to_string();
                if !vol.is_empty() {
                    self.rebind_pv(&vol);
                }
            }
            ("events.k8s.io", "events") => self.mirror_event(ns, name, obj),
            ("apiextensions.k8s.io", "customresourcedefinitions") => {
                if self.config.crd_delay.is_zero() {
                    self.establish_crd(name);
                } else {
                    self.after.push(After::EstablishCrd(name.to_string()));
                }
            }
            _ => {}
        }
    }

    /// The scheduler: binds Pod `ns/name` to a Node when it names none
    /// ([`crate::workloads::node_for`]), as a binding does (`spec.nodeName` and the
    /// `PodScheduled` condition, one modification).
    pub fn schedule_pod(&mut self, ns: &str, name: &str) {
        let def = self.def("", "pods");
        let Some(cur) = self.store.get(&def.key(), ns, name) else {
            return;
        };
        let mut pod = cur.value();
        let nodes = self.store.current(&self.def("", "nodes").key(), None);
        let values: Vec<Value> = nodes.iter().map(|(_, n)| n.value()).collect();
        let Some(node) = crate::workloads::node_for(&pod, values.iter()) else {
            return;
        };
        pod["spec"]["nodeName"] = json!(node);
        let mut conditions = pod["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        conditions.retain(|c| c["type"] != "PodScheduled");
        conditions.push(json!({"type": "PodScheduled", "status": "True",
            "lastProbeTime": null, "lastTransitionTime": now()}));
        pod["status"]["conditions"] = json!(conditions);
        self.store
            .put(&def.key(), ns, name, pod, EventType::Modified);
    }

    /// Set a CRD's `NamesAccepted`/`Established` conditions and serve its resources.
    pub fn establish_crd(&mut self, name: &str) {
        let def = self.def("apiextensions.k8s.io", "customresourcedefinitions");
        let Some(cur) = self.store.get(&def.key(), "", name) else {
            return;
        };
        let mut v = cur.value();
        if !v["metadata"]["deletionTimestamp"].is_null() {
            return;
        }
        let t = now();
        v["status"]["conditions"] = json!([
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": t},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": t}
        ]);
        self.catalog.add_crd(&v);
        self.store.put(&def.key(), "", name, v, EventType::Modified);
    }

    fn crd_established(v: &Value) -> bool {
        v["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Established" && c["status"] == "True")
    }

    /// Allocate/validate a Service's cluster IP and node ports and apply its defaults.
    fn prepare_service(
        &mut self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        body: &mut Value,
        old: Option<&Value>,
        dry_run: bool,
    ) -> Result<(), ApiError> {
        if !body["spec"].is_object() {
            body["spec"] = json!({});
        }
        let owner: ObjKey = (ns.to_string(), name.to_string());
        // Before 1.20 an update must carry the Service's clusterIP unchanged (`kubectl replace`
        // without it fails: kubernetes#91459); 1.20 and later take it from the old object.
        if let Some(old) = old
            && self.config.server_version.minor() < 20
        {
            let ty = |v: &Value| {
                v["spec"]["type"]
                    .as_str()
                    .unwrap_or("ClusterIP")
                    .to_string()
            };
            let old_ip = old["spec"]["clusterIP"].as_str().unwrap_or_default();
            let new_ip = body["spec"]["clusterIP"].as_str().unwrap_or_default();
            if ty(body) != "ExternalName"
                && ty(old) != "ExternalName"
                && !old_ip.is_empty()
                && new_ip != old_ip
            {
                return Err(ApiError::invalid(
                    def,
                    name,
                    "spec.clusterIP",
                    format!(
                        "Invalid value: {}: field is immutable",
                        serde_json::to_string(new_ip).unwrap_or_default()
                    ),
                ));
            }
        }
        if let Some(old) = old {
            for f in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
                if body["spec"][f].is_null() && !old["spec"][f].is_null() {
                    body["spec"][f] = old["spec"][f].clone();
                }
            }
        }
        let spec = &mut body["spec"];
        let ty = spec["type"].as_str().unwrap_or("ClusterIP").to_string();
        spec["type"] = json!(ty);
        if spec["sessionAffinity"].is_null() {
            spec["sessionAffinity"] = json!("None");
        }
        let mut new_ip: Option<u32> = None;
        if ty != "ExternalName" {
            let requested = spec["clusterIP"]
                .as_str()
                .or_else(|| spec["clusterIPs"][0].as_str())
                .unwrap_or_default()
                .to_string();
            let ip_str = if requested == "None" {
                "None".to_string()
            } else if !requested.is_empty() {
                let invalid = |msg: String| {
                    ApiError::invalid(
                        def,
                        name,
                        "spec.clusterIPs",
                        format!("Invalid value: []string{{\"{requested}\"}}: {msg}"),
                    )
                };
                let ip: Ipv4Addr = requested
                    .parse()
                    .map_err(|_| invalid("must be a valid IP address".into()))?;
                let n = u32::from(ip);
                let base = self.config.cidr_base;
                if n <= base || n >= base + self.config.cidr_size - 1 {
                    return Err(invalid(format!(
                        "failed to allocate IP {requested}: the provided IP ({requested}) is not in the valid range. The range of valid IPs is {}/{}",
                        Ipv4Addr::from(base),
                        32 - self.config.cidr_size.trailing_zeros()
                    )));
                }
                match self.ips.get(&n) {
                    Some(o) if *o != owner => {
                        return Err(invalid(format!(
                            "failed to allocate IP {requested}: provided IP is already allocated"
                        )));
                    }
                    Some(_) => {}
                    None => new_ip = Some(n),
                }
                requested
            } else {
                let n = self.next_ip().ok_or_else(|| {
                    ApiError::new(500, "InternalError", "range is full: no service IPs left")
                })?;
                new_ip = Some(n);
                Ipv4Addr::from(n).to_string()
            };
            spec["clusterIP"] = json!(ip_str);
            // Dual-stack fields from 1.20, internalTrafficPolicy defaulted from 1.22.
            let minor = self.config.server_version.minor();
            if minor >= 20 {
                spec["clusterIPs"] = json!([ip_str]);
                if ip_str != "None" || spec["ipFamilies"].is_null() {
                    spec["ipFamilies"] = json!(["IPv4"]);
                    spec["ipFamilyPolicy"] = json!("SingleStack");
                }
            }
            if minor >= 22 && spec["internalTrafficPolicy"].is_null() {
                spec["internalTrafficPolicy"] = json!("Cluster");
            }
        }
        let wants_node_ports = ty == "NodePort" || ty == "LoadBalancer";
        if wants_node_ports && spec["externalTrafficPolicy"].is_null() {
            spec["externalTrafficPolicy"] = json!("Cluster");
        }
        let mut new_ports: Vec<u16> = Vec::new();
        let old_ports = old
            .and_then(|o| o["spec"]["ports"].as_array().cloned())
            .unwrap_or_default();
        if let Some(ports) = spec["ports"].as_array_mut() {
            for (i, p) in ports.iter_mut().enumerate() {
                if p["protocol"].is_null() {
                    p["protocol"] = json!("TCP");
                }
                if p["targetPort"].is_null() {
                    p["targetPort"] = p["port"].clone();
                }
                if !wants_node_ports {
                    continue;
                }
                if p["nodePort"].is_null()
                    && let Some(op) = old_ports.iter().find(|op| op["port"] == p["port"])
                {
                    p["nodePort"] = op["nodePort"].clone();
                }
                match p["nodePort"].as_u64() {
                    Some(np) => {
                        let np16 = u16::try_from(np).unwrap_or(0);
                        let field = format!("spec.ports[{i}].nodePort");
                        if !(30000..=32767).contains(&np16) {
                            return Err(ApiError::invalid(
                                def,
                                name,
                                &field,
                                format!(
                                    "Invalid value: {np}: provided port is not in the valid range. The range of valid ports is 30000-32767"
                                ),
                            ));
                        }
                        match self.node_ports.get(&np16) {
                            Some(o) if *o != owner => {
                                return Err(ApiError::invalid(
                                    def,
                                    name,
                                    &field,
                                    format!(
                                        "Invalid value: {np}: provided port is already allocated"
                                    ),
                                ));
                            }
                            Some(_) => {}
                            None => {
                                if new_ports.contains(&np16) {
                                    return Err(ApiError::invalid(
                                        def,
                                        name,
                                        &field,
                                        format!("Duplicate value: {np}"),
                                    ));
                                }
                                new_ports.push(np16)
                            }
                        }
                    }
                    None => {
                        let np = self.next_port(&new_ports).ok_or_else(|| {
                            ApiError::new(500, "InternalError", "range is full: no node ports left")
                        })?;
                        new_ports.push(np);
                        p["nodePort"] = json!(np);
                    }
                }
            }
        }
        if !dry_run {
            if let Some(n) = new_ip {
                self.ips.insert(n, owner.clone());
            }
            for p in new_ports {
                self.node_ports.insert(p, owner.clone());
            }
        }
        Ok(())
    }

    fn next_ip(&mut self) -> Option<u32> {
        let size = self.config.cidr_size;
        for _ in 0..size {
            let off = self.ip_cursor;
            self.ip_cursor = if off + 1 >= size - 1 { 1 } else { off + 1 };
            let n = self.config.cidr_base + off;
            if off >= 1 && off < size - 1 && !self.ips.contains_key(&n) {
                return Some(n);
            }
        }
        None
    }

    fn next_port(&mut self, taken: &[u16]) -> Option<u16> {
        for _ in 0..2768 {
            let p = 30000 + self.port_cursor;
            self.port_cursor = (self.port_cursor + 1) % 2768;
            if !self.node_ports.contains_key(&p) && !taken.contains(&p) {
                return Some(p);
            }
        }
        None
    }

    fn release_service(&mut self, ns: &str, name: &str) {
        let owner: ObjKey = (ns.to_string(), name.to_string());
        self.ips.retain(|_, o| *o != owner);
        self.node_ports.retain(|_, o| *o != owner);
    }

    /// Recompute the binding of a PV and the PVC its claimRef names.
    fn rebind_pv(&mut self, pv_name: &str) {
        let pvdef = self.def("", "persistentvolumes");
        let pvcdef = self.def("", "persistentvolumeclaims");
        let Some(pv) = self.store.get(&pvdef.key(), "", pv_name) else {
            return;
        };
        let pv = pv.value();
        let cns = str_of(&pv, &["spec", "claimRef", "namespace"]).to_string();
        let cname = str_of(&pv, &["spec", "claimRef", "name"]).to_string();
        let pvc = if cname.is_empty() {
            None
        } else {
            self.store
                .get(&pvcdef.key(), &cns, &cname)
                .map(|s| s.value())
        };
        match pvc {
            Some(pvc) if str_of(&pvc, &["spec", "volumeName"]) == pv_name => {
                let mut npv = pv.clone();
                npv["spec"]["claimRef"]["uid"] = pvc["metadata"]["uid"].clone();
                if npv["spec"]["claimRef"]["kind"].is_null() {
                    npv["spec"]["claimRef"]["kind"] = json!("PersistentVolumeClaim");
                    npv["spec"]["claimRef"]["apiVersion"] = json!("v1");
                }
                npv["status"] = json!({"phase": "Bound"});
                if npv != pv {
                    self.store
                        .put(&pvdef.key(), "", pv_name, npv, EventType::Modified);
                }
                let mut npvc = pvc.clone();
                npvc["status"] = json!({"phase": "Bound", "accessModes": pv["spec"]["accessModes"], "capacity": pv["spec"]["capacity"]});
                let m = meta(&mut npvc);
                if !m.get("annotations").is_some_and(Value::is_object) {
                    m.insert("annotations".into(), json!({}));
                }
                m["annotations"]["pv.kubernetes.io/bind-completed"] = json!("yes");
                if npvc != pvc {
                    self.store
                        .put(&pvcdef.key(), &cns, &cname, npvc, EventType::Modified);
                }
            }
            _ => {
                let phase = if !str_of(&pv, &["spec", "claimRef", "uid"]).is_empty() {
                    "Released"
                } else {
                    "Available"
                };
                if pv["status"]["phase"] != phase {
                    let mut npv = pv.clone();
                    npv["status"] = json!({"phase": phase});
                    self.store
                        .put(&pvdef.key(), "", pv_name, npv, EventType::Modified);
                }
            }
        }
    }

    /// PUT (also `/status` with `sub = Some("status")`; `/scale` writes come as main writes
    /// with `sub = Some("scale")`, recorded as that subresource).
    #[allow(clippy::too_many_arguments)]
    pub fn update(
        &mut self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        mut body: Value,
        sub: Option<&str>,
        opts: &WriteOpts,
    ) -> Result<Value, ApiError> {
        let ns = if def.namespaced { ns } else { "" };
        Self::check_body(def, ns, &mut body, Some(name))?;
        crate::convert::drop_unknown_fields(
            &def.group,
            &def.version,
            self.config.server_version.minor(),
            &mut body,
        );
        let Some(cur) = self.store.get(&def.key(), ns, name) else {
            return Err(ApiError::not_found(def, name));
        };
        let old = cur.value();
        let given_rv = str_of(&body, &["metadata", "resourceVersion"]);
        if !given_rv.is_empty() && given_rv != str_of(&old, &["metadata", "resourceVersion"]) {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                    qualified(def)
                ),
            )
            .with_details(name, &def.group, &def.plural));
        }
        let mut new = if sub == Some("status") {
            let mut n = old.clone();
            n["status"] = body["status"].clone();
            n
        } else if sub == Some("ephemeralcontainers") {
            let causes = crate::workloads::check_ephemeral_containers_update(&body, &old);
            if !causes.is_empty() {
                return Err(ApiError::invalid_causes(def, name, &causes));
            }
            let mut n = old.clone();
            n["spec"]["ephemeralContainers"] = body["spec"]["ephemeralContainers"].clone();
            n
        } else {
            let mut n = body;
            if def.has_status() {
                match old.get("status") {
                    Some(s) => n["status"] = s.clone(),
                    None => {
                        if let Some(o) = n.as_object_mut() {
                            o.remove("status");
                        }
                    }
                }
            }
            let m = meta(&mut n);
            for f in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "managedFields",
            ] {
                match old["metadata"].get(f) {
                    Some(v) => {
                        m.insert(f.into(), v.clone());
                    }
                    None => {
                        m.remove(f);
                    }
                }
            }
            if spec_part(&n) != spec_part(&old)
                && let Some(g) = old["metadata"]["generation"].as_i64()
            {
                meta(&mut n).insert("generation".into(), json!(g + 1));
            }
            n
        };
        match &opts.managed {
            Some(managed) => set_managed(&mut new, managed),
            None => {
                let schema = self.cr_schema(def);
                let ctx = self.fields_ctx(def, schema.as_ref(), &def.api_version(), sub);
                crate::fields::record_update(&ctx, Some(&old), &mut new, manager_of(opts), &now());
            }
        }
        if def.group.is_empty() && def.plural == "services" && sub.is_none() {
            self.prepare_service(def, ns, name, &mut new, Some(&old), opts.dry_run)?;
        }
        if sub.is_none() {
            let minor = self.config.server_version.minor();
            let causes = match (def.group.as_str(), def.plural.as_str()) {
                ("", "pods") => crate::workloads::check_pod_update(&new, &old, minor),
                ("", "persistentvolumeclaims") => crate::workloads::check_claim_update(&new, &old),
                ("batch", "jobs") => crate::jobs::check_update(&new, &old),
                ("apps", "statefulsets") => {
                    crate::workloads::check_statefulset_update(&new, &old, minor)
                }
                ("apps", "deployments" | "replicasets" | "daemonsets") if def.version == "v1" => {
                    crate::workloads::check_selector_update(&new, &old)
                }
                _ => Vec::new(),
            };
            if !causes.is_empty() {
                return Err(ApiError::invalid_causes(def, name, &causes));
            }
        }
        if def.group.is_empty() && def.plural == "namespaces" {
            new["spec"] = old["spec"].clone();
            let m = meta(&mut new);
            if !m.get("labels").is_some_and(Value::is_object) {
                m.insert("labels".into(), json!({}));
            }
            m["labels"]["kubernetes.io/metadata.name"] = json!(name);
        }
        if def.group == "apiextensions.k8s.io"
            && def.plural == "customresourcedefinitions"
            && sub.is_none()
        {
            self.check_crd(def, name, &new)?;
        }
        let causes = crate::meta::check_update(&new, self.config.server_version.minor());
        if !causes.is_empty() {
            return Err(ApiError::invalid_causes(def, name, &causes));
        }
        self.check_custom_resource(def, name, &mut new)?;
        self.call_webhooks("UPDATE", def, ns, name, &new, sub)?;
        if opts.dry_run {
            return Ok(new);
        }
        if new == old {
            return Ok(old);
        }
        let (_, out) = self
            .store
            .put(&def.key(), ns, name, new, EventType::Modified);
        self.after_update(def, ns, name, &out);
        Ok(self
            .store
            .get(&def.key(), ns, name)
            .map(|s| s.value())
            .unwrap_or(out))
    }

    fn after_update(&mut self, def: &ResourceDef, ns: &str, name: &str, obj: &Value) {
        let deleting = !obj["metadata"]["deletionTimestamp"].is_null();
        let no_finalizers = obj["metadata"]["finalizers"]
            .as_array()
            .is_none_or(Vec::is_empty);
        if deleting && no_finalizers {
            if def.group.is_empty() && def.plural == "namespaces" {
                self.after.push(After::FinishNamespace(name.to_string()));
            } else {
                self.remove(def, ns, name, obj.clone());
            }
            return;
        }
        match (def.group.as_str(), def.plural.as_str()) {
            ("", "persistentvolumes") => self.rebind_pv(name),
            ("", "persistentvolumeclaims") => {
                let vol = str_of(obj, &["spec", "volumeName"]).to_string();
                if !vol.is_empty() {
                    self.rebind_pv(&vol);
                }
            }
            ("apiextensions.k8s.io", "customresourcedefinitions") if Self::crd_established(obj) => {
                self.catalog.add_crd(obj)
            }
            ("events.k8s.io", "events") => self.mirror_event(ns, name, obj),
            _ => {}
        }
    }

    /// A real server keeps `events.k8s.io/v1` and core `v1` Events in one storage, so an
    /// Event a controller publishes through the new API is what `kubectl describe` lists
    /// through the old one. The emulator stores the core form beside the new one.
    fn mirror_event(&mut self, ns: &str, name: &str, ev: &Value) {
        let mut core = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": ev["metadata"].clone(),
            "involvedObject": ev["regarding"].clone(),
            "reason": ev["reason"].clone(),
            "message": ev["note"].clone(),
            "type": ev["type"].clone(),
            "action": ev["action"].clone(),
            "eventTime": ev["eventTime"].clone(),
            "reportingComponent": ev["reportingController"].clone(),
            "reportingInstance": ev["reportingInstance"].clone(),
            "source": {"component": ev["reportingController"].clone()},
        });
        for (from, to) in [
            ("series", "series"),
            ("related", "related"),
            ("deprecatedCount", "count"),
            ("deprecatedFirstTimestamp", "firstTimestamp"),
            ("deprecatedLastTimestamp", "lastTimestamp"),
        ] {
            if !ev[from].is_null() {
                core[to] = ev[from].clone();
            }
        }
        if let Some(m) = core.as_object_mut() {
            m.retain(|_, v| !v.is_null());
        }
        let key = self.def("", "events").key();
        let etype = if self.store.get(&key, ns, name).is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.store.put(&key, ns, name, core, etype);
    }

    /// PATCH (merge, JSON, strategic-as-merge, apply).
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        content_type: &str,
        body: &[u8],
        sub: Option<&str>,
        opts: &WriteOpts,
    ) -> Result<Value, ApiError> {
        self.patch_at(def, None, ns, name, content_type, body, sub, opts)
    }

    /// PATCH through `view`, another version of `def`'s resource (`def` being its storage
    /// version): the patch applies to the object as `view` serves it.
    #[allow(clippy::too_many_arguments)]
    pub fn patch_at(
        &mut self,
        def: &ResourceDef,
        view: Option<&ResourceDef>,
        ns: &str,
        name: &str,
        content_type: &str,
        body: &[u8],
        sub: Option<&str>,
        opts: &WriteOpts,
    ) -> Result<Value, ApiError> {
        let to_view = |mut v: Value| {
            if let Some(view) = view {
                crate::convert::convert(&mut v, &def.kind, &def.api_version(), &view.api_version());
            }
            v
        };
        let to_storage = |mut v: Value| {
            if let Some(view) = view {
                crate::convert::convert(&mut v, &def.kind, &view.api_version(), &def.api_version());
            }
            v
        };
        let ns = if def.namespaced { ns } else { "" };
        let ct = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        let bad = |e: String| {
            ApiError::bad_request(format!(
                "invalid patch for {} \"{name}\": {e}",
                qualified(def)
            ))
        };
        let cur = self
            .store
            .get(&def.key(), ns, name)
            .map(|s| to_view(s.value()));
        if ct == "application/apply-patch+yaml" {
            if !opts.explicit_manager {
                return Err(patch_options_invalid(
                    "FieldValueRequired",
                    "fieldManager",
                    "Required value: is required for apply patch",
                ));
            }
            // A real server's answer to an apply body that is not a YAML (or JSON) object.
            let undecodable =
                |e: String| ApiError::bad_request(format!("error decoding YAML: {e}"));
            let text = std::str::from_utf8(body).map_err(|e| undecodable(e.to_string()))?;
            let mut patch: Value =
                serde_saphyr::from_str(text).map_err(|e| undecodable(e.to_string()))?;
            if !patch.is_object() {
                return Err(undecodable(
                    "the apply patch is not a map of fields".to_string(),
                ));
            }
            let av = view.unwrap_or(def).api_version();
            let given = patch["apiVersion"].as_str().unwrap_or_default();
            if given != av {
                return Err(ApiError::bad_request(format!(
                    "Incorrect version specified in apply patch. Specified patch version: {given}, expected: {av}"
                )));
            }
            if !patch["metadata"]["managedFields"].is_null() {
                return Err(ApiError::bad_request("metadata.managedFields must be nil"));
            }
            if cur.is_none() {
                if sub.is_some() {
                    return Err(ApiError::not_found(def, name));
                }
                meta(&mut patch).insert("name".into(), json!(name));
            }
            let schema = self.cr_schema(def);
            let ctx = self.fields_ctx(def, schema.as_ref(), &av, sub);
            let merged = crate::fields::apply(
                &ctx,
                cur.as_ref(),
                &patch,
                &opts.manager,
                opts.force == Some(true),
                &now(),
            )
            .map_err(|c| {
                let mut e = ApiError::new(409, "Conflict", c.message());
                e.details = Some(json!({"causes": c.causes()}));
                e
            })?;
            let opts = WriteOpts {
                managed: Some(merged["metadata"]["managedFields"].clone()),
                ..opts.clone()
            };
            return match cur {
                None => self.create(def, ns, to_storage(merged), &opts),
                Some(_) => self.update(def, ns, name, to_storage(merged), sub, &opts),
            };
        }
        if opts.force.is_some() {
            return Err(patch_options_invalid(
                "FieldValueForbidden",
                "force",
                "Forbidden: may not be specified for non-apply patch",
            ));
        }
        let Some(mut doc) = cur else {
            return Err(ApiError::not_found(def, name));
        };
        match ct.as_str() {
            "application/json-patch+json" => {
                let mut p: json_patch::Patch =
                    serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
                // The real server's JSON patch (evanphx/json-patch) treats an absent path as
                // `null` in a `test` operation: kube-runtime's finalizer helper relies on it.
                p.0.retain(|op| match op {
                    json_patch::PatchOperation::Test(t) => {
                        !(t.value.is_null() && doc.pointer(t.path.as_str()).is_none())
                    }
                    _ => true,
                });
                json_patch::patch(&mut doc, &p.0).map_err(|e| {
                    ApiError::new(
                        422,
                        "Invalid",
                        format!(
                            "the server rejected our request due to an error in our request: {e}"
                        ),
                    )
                })?;
            }
            "application/merge-patch+json" => {
                let p: Value = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
                json_patch::merge(&mut doc, &p);
            }
            "application/strategic-merge-patch+json" => {
                let p: Value = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
                smp(&mut doc, &p);
            }
            other => {
                return Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!(
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {other:?})"
                    ),
                ));
            }
        }
        self.update(def, ns, name, to_storage(doc), sub, opts)
    }

    /// DELETE of one object (finalizers respected, namespaces terminate asynchronously).
    pub fn delete(
        &mut self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        opts: &WriteOpts,
    ) -> Result<Value, ApiError> {
        let ns = if def.namespaced { ns } else { "" };
        let Some(cur) = self.store.get(&def.key(), ns, name) else {
            return Err(ApiError::not_found(def, name));
        };
        let mut v = cur.value();
        let is_ns = def.group.is_empty() && def.plural == "namespaces";
        let has_finalizers = v["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|a| !a.is_empty());
        if opts.dry_run {
            return Ok(v);
        }
        if is_ns || has_finalizers {
            if v["metadata"]["deletionTimestamp"].is_null() {
                meta(&mut v).insert("deletionTimestamp".into(), json!(now()));
                meta(&mut v).insert("deletionGracePeriodSeconds".into(), json!(0));
                if is_ns {
                    v["status"] = json!({"phase": "Terminating"});
                }
                let (_, out) = self.store.put(&def.key(), ns, name, v, EventType::Modified);
                v = out;
            }
            if is_ns {
                self.after.push(After::FinishNamespace(name.to_string()));
            }
            return Ok(v);
        }
        Ok(self.remove(def, ns, name, v))
    }

    /// Remove an object now (no finalizer checks) and run its removal side effects.
    fn remove(&mut self, def: &ResourceDef, ns: &str, name: &str, last: Value) -> Value {
        let out = self.store.delete(&def.key(), ns, name, last);
        match (def.group.as_str(), def.plural.as_str()) {
            ("", "services") => {
                self.release_service(ns, name);
                // The endpoints controller deletes a deleted Service's Endpoints.
                let ep = self.def("", "endpoints");
                if let Some(e) = self.store.get(&ep.key(), ns, name) {
                    self.store.delete(&ep.key(), ns, name, e.value());
                }
            }
            ("", "persistentvolumeclaims") => {
                let vol = str_of(&out, &["spec", "volumeName"]).to_string();
                if !vol.is_empty() {
                    self.rebind_pv(&vol);
                }
            }
            ("apiextensions.k8s.io", "customresourcedefinitions") => {
                let g = str_of(&out, &["spec", "group"]).to_string();
                let p = str_of(&out, &["spec", "names", "plural"]).to_string();
                let key = ResKey {
                    group: g.clone(),
                    plural: p.clone(),
                };
                if let Some(crdef) = self.catalog.find_any(&g, &p).cloned() {
                    for ((ons, oname), o) in self.store.current(&key, None) {
                        self.remove(&crdef, &ons, &oname, o.value());
                    }
                }
                self.catalog.remove(&g, &p);
            }
            _ => {}
        }
        out
    }

    /// Delete the contents of a terminating namespace; remove it once empty. True when done.
    pub fn finish_namespace(&mut self, name: &str) -> bool {
        let nsdef = self.def("", "namespaces");
        let Some(cur) = self.store.get(&nsdef.key(), "", name) else {
            return true;
        };
        let opts = WriteOpts {
            manager: "kube-controller-manager".into(),
            ..Default::default()
        };
        let keys = self.store.namespaced_keys(name);
        for (res, oname) in &keys {
            let Some(def) = self.catalog.find_any(&res.group, &res.plural).cloned() else {
                continue;
            };
            let _ = self.delete(&def, name, oname, &opts);
        }
        if !self.store.namespaced_keys(name).is_empty() {
            return false;
        }
        let v = cur.value();
        if v["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
        {
            return false;
        }
        self.remove(&nsdef, "", name, v);
        true
    }

    /// Add a fixture object: keeps uid/creationTimestamp, registers CRDs as established.
    pub fn seed(&mut self, obj: Value) -> Result<(), String> {
        let av = obj["apiVersion"].as_str().unwrap_or_default().to_string();
        let kind = obj["kind"].as_str().unwrap_or_default().to_string();
        let (group, version) = match av.split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), av.clone()),
        };
        let mut obj = obj;
        let def = match self.catalog.find_kind(&group, &version, &kind) {
            Some(d) => d.clone(),
            None => {
                // An older or newer release: the fixture object at this release's version of
                // its kind; not served at all, it is not part of this release's cluster.
                let Some(d) = self
                    .catalog
                    .resources
                    .iter()
                    .find(|r| r.kind == kind && r.storage && r.key().group == group)
                    .cloned()
                else {
                    return Ok(());
                };
                d
            }
        };
        // Stored once, at the storage version.
        let def = self.catalog.storage_def(&def.key()).cloned().unwrap_or(def);
        crate::convert::convert(&mut obj, &kind, &av, &def.api_version());
        let group = def.group.clone();
        let ns = str_of(&obj, &["metadata", "namespace"]).to_string();
        let name = str_of(&obj, &["metadata", "name"]).to_string();
        let status = obj.get("status").cloned();
        let opts = WriteOpts {
            manager: "fixture".into(),
            keep_identity: true,
            ..Default::default()
        };
        // A fixture object replaces one the server made itself (default ServiceAccounts,
        // kube-root-ca.crt, base namespaces) so fixtures may list complete namespaces.
        let seed_ns = if def.namespaced { ns.as_str() } else { "" };
        if let Some(existing) = self.store.get(&def.key(), seed_ns, &name) {
            if group.is_empty() && kind == "Service" {
                self.release_service(seed_ns, &name);
            }
            self.store
                .delete(&def.key(), seed_ns, &name, existing.value());
        }
        let created = self
            .create(&def, &ns, obj, &opts)
            .map_err(|e| format!("seeding {kind} {ns}/{name}: {}", e.message))?;
        let keep_status = status.is_some()
            && !matches!(
                (group.as_str(), kind.as_str()),
                (
                    "",
                    "Namespace" | "PersistentVolume" | "PersistentVolumeClaim"
                ) | ("apiextensions.k8s.io", _)
            );
        if keep_status {
            let mut v = created;
            v["status"] = status.unwrap_or(Value::Null);
            let n = str_of(&v, &["metadata", "name"]).to_string();
            self.store.put(&def.key(), &ns, &n, v, EventType::Modified);
        }
        if group == "apiextensions.k8s.io" {
            self.establish_crd(&name);
        }
        Ok(())
    }
}

/// Merge keys tried for lists of objects in strategic merge patches.
const MERGE_KEYS: &[&str] = &[
    "name",
    "containerPort",
    "mountPath",
    "devicePath",
    "port",
    "ip",
    "type",
    "topologyKey",
];

fn merge_key(items: &[Value]) -> Option<&'static str> {
    if items.is_empty() || !items.iter().all(Value::is_object) {
        return None;
    }
    MERGE_KEYS
        .iter()
        .copied()
        .find(|k| items.iter().all(|i| i.get(*k).is_some()))
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

/// A simplified strategic merge patch: objects merge, lists of objects with a merge key merge
/// by that key, `$patch: delete` removes list entries, other directives are ignored.
pub(crate) fn smp(doc: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *doc = patch.clone();
        return;
    };
    if !doc.is_object() {
        *doc = json!({});
    }
    let Some(d) = doc.as_object_mut() else {
        return;
    };
    for (k, pv) in p {
        if k.starts_with('$') {
            continue;
        }
        if pv.is_null() {
            d.remove(k);
            continue;
        }
        match (d.get_mut(k), pv) {
            (Some(Value::Array(da)), Value::Array(pa)) => {
                let key = merge_key(pa)
                    .filter(|key| da.iter().all(|i| i.is_object() && i.get(*key).is_some()));
                match key {
                    Some(key) => {
                        for pe in pa {
                            let pos = da.iter().position(|de| de[key] == pe[key]);
                            if pe["$patch"] == "delete" {
                                if let Some(i) = pos {
                                    da.remove(i);
                                }
                                continue;
                            }
                            match pos {
                                Some(i) => smp(&mut da[i], pe),
                                None => da.push(strip_directives(pe)),
                            }
                        }
                    }
                    None => {
                        d.insert(k.clone(), strip_directives(pv));
                    }
                }
            }
            (Some(dv), Value::Object(_)) if dv.is_object() => smp(dv, pv),
            _ => {
                d.insert(k.clone(), strip_directives(pv));
            }
        }
    }
}

/// The PEM text used for emulated CA bundles (not a real certificate).
pub(crate) const EMULATOR_CA: &str =
    "-----BEGIN CERTIFICATE-----\nZW11bGF0ZWQgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smp_merges_lists_by_name() {
        let mut doc = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}});
        smp(
            &mut doc,
            &json!({"spec": {"$setElementOrder/containers": [{"name": "a"}], "containers": [{"name": "a", "image": "z"}, {"name": "b", "$patch": "delete"}]}}),
        );
        assert_eq!(
            doc,
            json!({"spec": {"containers": [{"name": "a", "image": "z"}]}})
        );
    }

    #[test]
    fn cidr_parsing() {
        let (base, size) = parse_cidr("10.96.0.0/16").unwrap();
        assert_eq!(Ipv4Addr::from(base).to_string(), "10.96.0.0");
        assert_eq!(size, 65536);
        assert!(parse_cidr("10.96.0.0").is_err());
        assert!(parse_cidr("10.96.0.0/40").is_err());
    }
}
