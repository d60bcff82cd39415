//! The HTTP layer: routing of Kubernetes API paths, auth, fault injection, list pages,
//! watch streams and the JSON/`Status` encoding of answers.
//!
//! Owns no semantics of its own beyond HTTP: writes go through `api::State`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State as AxState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};

use crate::api::{After, ApiError, State, WriteOpts, qualified};
use crate::catalog::{ResourceDef, is_builtin_group};
use crate::faults::Faults;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{EventType, ObjKey};

/// State shared by all requests of one emulator.
pub(crate) struct Shared {
    pub state: Mutex<State>,
    pub faults: Faults,
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    pub token: Option<String>,
    pub crd_delay: Duration,
    pub server_addr: String,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

fn json_bytes(code: u16, body: Vec<u8>) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn json_value(code: u16, v: &Value) -> Response {
    json_bytes(code, serde_json::to_vec(v).unwrap_or_default())
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_value(self.code, &self.body())
    }
}

fn reason_for(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        410 => "Expired",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "Unknown",
    }
}

async fn handle(AxState(sh): AxState<Arc<Shared>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    tracing::debug!(%method, %path, "request");
    let decision = sh.faults.decide(method.as_str(), &path);
    if let Some(d) = decision.latency {
        tokio::time::sleep(d).await;
    }
    if decision.drop {
        // Abort this connection's task: hyper closes the socket without an answer.
        std::panic::resume_unwind(Box::new("kube-emulator fault: drop connection"));
    }
    if let Some((code, retry_after)) = decision.status {
        let mut e = ApiError::new(code, reason_for(code), "injected fault");
        if let Some(s) = retry_after {
            e.details = Some(json!({"retryAfterSeconds": s}));
        }
        let mut r = e.into_response();
        if let Some(s) = retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    if let Some(token) = &sh.token {
        let ok = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| t.trim() == token);
        if !ok {
            return ApiError::new(401, "Unauthorized", "Unauthorized").into_response();
        }
    }
    let query: HashMap<String, String> = Query::try_from_uri(req.uri())
        .map(|Query(q)| q)
        .unwrap_or_default();
    let headers = req.headers().clone();
    let body = match axum::body::to_bytes(req.into_body(), 256 << 20).await {
        Ok(b) => b,
        Err(e) => {
            return ApiError::bad_request(format!("reading the request body: {e}")).into_response();
        }
    };
    match route(&sh, &method, &path, &query, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// The group versions of stored APIServices whose backends do not run (`aggregation`).
fn unavailable_apis(st: &State) -> Vec<(String, String)> {
    let Some(def) = st.catalog.find_any("apiregistration.k8s.io", "apiservices") else {
        return Vec::new();
    };
    let services: Vec<Value> = st
        .store
        .current(&def.key(), None)
        .into_iter()
        .map(|(_, o)| o.value())
        .collect();
    if services.is_empty() {
        return Vec::new();
    }
    let served = |g: &str, v: &str| st.catalog.serves(g, v);
    crate::aggregation::unavailable(&services, &served)
}

fn not_found_path() -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        "the server could not find the requested resource",
    )
}

async fn route(
    sh: &Arc<Shared>,
    method: &Method,
    path: &str,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let get = method == Method::GET;
    if let ["apis", g, v, ..] = segs.as_slice()
        && !sh.lock().catalog.serves(g, v)
        && unavailable_apis(&sh.lock())
            .iter()
            .any(|(ug, uv)| ug == g && uv == v)
    {
        // The aggregator's answer for a backend that does not run (`aggregation`).
        return Ok((
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "service unavailable\n",
        )
            .into_response());
    }
    match segs.as_slice() {
        ["version"] if get => Ok(json_value(
            200,
            &sh.lock().config.server_version.version_json(),
        )),
        ["healthz" | "livez" | "readyz"] if get => {
            Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], "ok").into_response())
        }
        ["api" | "apis"]
            if get
                && wants_aggregated(headers)
                && sh.lock().config.server_version.aggregated_discovery() =>
        {
            let v = sh.lock().catalog.aggregated(segs[0] == "api");
            let mut r = json_value(200, &v);
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
                ),
            );
            Ok(r)
        }
        ["api"] if get => Ok(json_value(
            200,
            &sh.lock().catalog.api_versions(&sh.server_addr),
        )),
        ["apis"] if get => {
            let st = sh.lock();
            let mut list = st.catalog.api_group_list();
            crate::aggregation::list_groups(&mut list, &unavailable_apis(&st));
            Ok(json_value(200, &list))
        }
        ["openapi", "v2"] if get => Ok(json_value(
            200,
            &openapi_v2(sh.lock().config.server_version.git_version()),
        )),
        ["openapi", "v3"] if get => Ok(json_value(200, &sh.lock().catalog.openapi_v3_root())),
        ["openapi", "v3", "api", v] if get => sh
            .lock()
            .catalog
            .openapi_v3_group("", v)
            .map(|d| json_value(200, &d))
            .ok_or_else(not_found_path),
        ["openapi", "v3", "apis", g, v] if get => sh
            .lock()
            .catalog
            .openapi_v3_group(g, v)
            .map(|d| json_value(200, &d))
            .ok_or_else(not_found_path),
        ["api", "v1"] if get => sh
            .lock()
            .catalog
            .resource_list("", "v1")
            .map(|d| json_value(200, &d))
            .ok_or_else(not_found_path),
        ["apis", g] if get => sh
            .lock()
            .catalog
            .api_group(g)
            .map(|d| json_value(200, &d))
            .ok_or_else(not_found_path),
        ["apis", g, v] if get => sh
            .lock()
            .catalog
            .resource_list(g, v)
            .map(|d| json_value(200, &d))
            .ok_or_else(not_found_path),
        ["api", "v1", rest @ ..] if !rest.is_empty() => {
            resource(sh, method, "", "v1", rest, q, headers, body).await
        }
        ["apis", g, v, rest @ ..] if !rest.is_empty() => {
            resource(sh, method, g, v, rest, q, headers, body).await
        }
        _ => Err(not_found_path()),
    }
}

/// Whether the client accepts aggregated discovery v2 (kubectl and `kube` ask for it).
fn wants_aggregated(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.replace(' ', "");
            t.contains("g=apidiscovery.k8s.io")
                && t.contains("v=v2;")
                && t.contains("as=APIGroupDiscoveryList")
                || t.starts_with(
                    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
                )
        })
}

fn openapi_v2(version: &str) -> Value {
    json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": version}, "paths": {}, "definitions": {}})
}

/// How objects stored at their resource's storage version are served at another version.
#[derive(Debug, Clone)]
struct View {
    kind: String,
    storage: String,
    served: String,
}

impl View {
    /// `None` when `def` is the storage version (objects are served as stored).
    fn of(def: &ResourceDef, storage: &ResourceDef) -> Option<View> {
        let (served, stored) = (def.api_version(), storage.api_version());
        (served != stored).then(|| View {
            kind: def.kind.clone(),
            storage: stored,
            served,
        })
    }

    /// A stored object as served.
    fn out(&self, mut v: Value) -> Value {
        if v["kind"] == self.kind.as_str() {
            crate::convert::convert(&mut v, &self.kind, &self.storage, &self.served);
        }
        v
    }

    /// A stored object's JSON as served.
    fn out_bytes(&self, bytes: &[u8]) -> Vec<u8> {
        match serde_json::from_slice::<Value>(bytes) {
            Ok(v) => serde_json::to_vec(&self.out(v)).unwrap_or_default(),
            Err(_) => bytes.to_vec(),
        }
    }

    /// A request body at the served version, at the storage version.
    fn to_storage(&self, mut v: Value) -> Result<Value, ApiError> {
        match v["apiVersion"].as_str() {
            Some(a) if a != self.served => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({a}) does not match the expected API version ({})",
                    self.served
                )));
            }
            _ => {}
        }
        crate::convert::convert(&mut v, &self.kind, &self.served, &self.storage);
        Ok(v)
    }
}

/// Serves a stored result through an optional view.
fn served(view: &Option<View>, v: Value) -> Value {
    match view {
        Some(view) => view.out(v),
        None => v,
    }
}

/// A parsed resource URL.
struct Target {
    def: ResourceDef,
    ns: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn parse_target(
    sh: &Shared,
    group: &str,
    version: &str,
    rest: &[&str],
) -> Result<Target, ApiError> {
    let ns_form = rest.len() >= 3
        && rest[0] == "namespaces"
        && !(group.is_empty() && rest.len() == 3 && (rest[2] == "status" || rest[2] == "finalize"));
    let (ns, rest) = if ns_form {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    if rest.len() > 3 {
        return Err(not_found_path());
    }
    let def = sh
        .lock()
        .catalog
        .find(group, version, rest[0])
        .cloned()
        .ok_or_else(not_found_path)?;
    if ns.is_some() && !def.namespaced {
        return Err(not_found_path());
    }
    let name = rest.get(1).map(|s| (*s).to_string());
    if def.namespaced && ns.is_none() && name.is_some() {
        return Err(not_found_path());
    }
    let sub = rest.get(2).map(|s| (*s).to_string());
    if let Some(s) = &sub
        && !def.subresources.iter().any(|x| x.name == *s)
    {
        return Err(not_found_path());
    }
    Ok(Target { def, ns, name, sub })
}

/// Whether the release takes writes of `pods/ephemeralcontainers` in the v1 Pod form (1.23+;
/// before, the feature was off by default).
fn ephemeral_writes(sh: &Shared) -> bool {
    sh.lock().config.server_version.minor() >= 23
}

fn method_not_allowed() -> ApiError {
    ApiError::new(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
    )
}

fn write_opts(q: &HashMap<String, String>, headers: &HeaderMap) -> WriteOpts {
    let manager = q.get("fieldManager").cloned().unwrap_or_else(|| {
        headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .and_then(|ua| ua.split('/').next())
            .unwrap_or("unknown")
            .to_string()
    });
    WriteOpts {
        dry_run: q.get("dryRun").is_some_and(|v| v == "All"),
        manager,
        explicit_manager: q.get("fieldManager").is_some_and(|m| !m.is_empty()),
        force: q.get("force").map(|v| v == "true"),
        keep_identity: false,
        managed: None,
    }
}

fn parse_json(def: &ResourceDef, headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if ct.starts_with("application/vnd.kubernetes.protobuf") {
        return crate::protobuf::decode(body).map_err(|e| {
            ApiError::new(
                415,
                "UnsupportedMediaType",
                format!("decoding the protobuf body for {}: {e}", qualified(def)),
            )
        });
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body of the request for {} could not be decoded: {e}",
            qualified(def)
        ))
    })
}

/// Run queued follow-ups (CRD establishment, namespace cleanup) in the background.
pub(crate) fn run_after(sh: &Arc<Shared>, afters: Vec<After>) {
    for a in afters {
        let sh = sh.clone();
        match a {
            After::EstablishCrd(name) => {
                tokio::spawn(async move {
                    tokio::time::sleep(sh.crd_delay).await;
                    let more = {
                        let mut st = sh.lock();
                        st.establish_crd(&name);
                        std::mem::take(&mut st.after)
                    };
                    run_after(&sh, more);
                });
            }
            After::SchedulePod(ns, name) => {
                tokio::spawn(async move {
                    tokio::time::sleep(sh.crd_delay).await;
                    let more = {
                        let mut st = sh.lock();
                        st.schedule_pod(&ns, &name);
                        std::mem::take(&mut st.after)
                    };
                    run_after(&sh, more);
                });
            }
            After::FinishNamespace(name) => {
                tokio::spawn(async move {
                    for _ in 0..2400 {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        let (done, more) = {
                            let mut st = sh.lock();
                            let done = st.finish_namespace(&name);
                            let more: Vec<After> = std::mem::take(&mut st.after)
                                .into_iter()
                                .filter(|a| !matches!(a, After::FinishNamespace(n) if *n == name))
                                .collect();
                            (done, more)
                        };
                        run_after(&sh, more);
                        if done {
                            break;
                        }
                    }
                });
            }
        }
    }
}

/// Run a write under the lock and schedule its follow-ups.
fn write<T>(sh: &Arc<Shared>, f: impl FnOnce(&mut State) -> T) -> T {
    let (out, afters) = {
        let mut st = sh.lock();
        let out = f(&mut st);
        (out, std::mem::take(&mut st.after))
    };
    // A namespace deletion queues FinishNamespace at most once per request.
    let mut seen: Vec<String> = Vec::new();
    let afters = afters
        .into_iter()
        .filter(|a| match a {
            After::FinishNamespace(n) => {
                if seen.contains(n) {
                    false
                } else {
                    seen.push(n.clone());
                    true
                }
            }
            After::EstablishCrd(_) | After::SchedulePod(..) => true,
        })
        .collect();
    run_after(sh, afters);
    out
}

#[allow(clippy::too_many_arguments)]
async fn resource(
    sh: &Arc<Shared>,
    method: &Method,
    group: &str,
    version: &str,
    rest: &[&str],
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let t = parse_target(sh, group, version, rest)?;
    let storage = sh
        .lock()
        .catalog
        .storage_def(&t.def.key())
        .cloned()
        .unwrap_or_else(|| t.def.clone());
    let view = View::of(&t.def, &storage);
    let sdef = &storage;
    let def = &t.def;
    let ns = t.ns.clone().unwrap_or_default();
    let opts = write_opts(q, headers);
    let verb_ok = |v: &str| {
        if def.has_verb(v) {
            Ok(())
        } else {
            Err(method_not_allowed())
        }
    };
    match (method.clone(), &t.name, t.sub.as_deref()) {
        (Method::GET, None, _) => {
            let watch = q.get("watch").is_some_and(|w| w == "1" || w == "true");
            if watch {
                verb_ok("watch")?;
                return watch_stream(sh, def, t.ns.as_deref(), q, view);
            }
            verb_ok("list")?;
            let bytes = list_bytes(sh, def, t.ns.as_deref(), q, view.as_ref())?;
            if wants_table(headers, def) {
                let list: Value = serde_json::from_slice(&bytes)
                    .map_err(|e| ApiError::new(500, "InternalError", e.to_string()))?;
                let items = list["items"].as_array().cloned().unwrap_or_default();
                return Ok(json_value(
                    200,
                    &table(def, &items, list["metadata"].clone()),
                ));
            }
            Ok(json_bytes(200, bytes))
        }
        (Method::GET, Some(name), sub) => {
            verb_ok("get")?;
            let obj = sh
                .lock()
                .store
                .get(&def.key(), &ns, name)
                .ok_or_else(|| ApiError::not_found(def, name))?;
            match sub {
                None if wants_table(headers, def) => Ok(json_value(
                    200,
                    &table(
                        def,
                        &[served(&view, obj.value())],
                        json!({"resourceVersion": ""}),
                    ),
                )),
                None | Some("status") => Ok(json_bytes(
                    200,
                    match &view {
                        Some(view) => view.out_bytes(&obj.bytes),
                        None => obj.bytes.to_vec(),
                    },
                )),
                Some("scale") => Ok(json_value(200, &scale_of(&obj.value()))),
                Some("log") => Ok(
                    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], "").into_response()
                ),
                Some(_) => Err(method_not_allowed()),
            }
        }
        (Method::POST, None, None) => {
            verb_ok("create")?;
            if def.namespaced && t.ns.is_none() {
                return Err(method_not_allowed());
            }
            let mut v = parse_json(def, headers, &body)?;
            if def.verbs.len() == 1 {
                // create-only review resources: answered, never stored
                v["status"] = json!({"allowed": true, "authenticated": true});
                return Ok(json_value(201, &v));
            }
            let out = write(sh, |st| {
                // Events are checked at the version they were sent to (v1 is strict).
                st.check_event_create(def, &v)?;
                let v = match &view {
                    Some(view) => view.to_storage(v)?,
                    None => v,
                };
                st.create(sdef, &ns, v, &opts)
            })?;
            Ok(json_value(201, &served(&view, out)))
        }
        (Method::PUT, Some(name), sub) => {
            verb_ok("update")?;
            let v = parse_json(def, headers, &body)?;
            let out = match sub {
                Some("scale") => write(sh, |st| {
                    let cur = st
                        .store
                        .get(&def.key(), &ns, name)
                        .ok_or_else(|| ApiError::not_found(def, name))?
                        .value();
                    let mut n = cur.clone();
                    n["spec"]["replicas"] = v["spec"]["replicas"].clone();
                    st.update(sdef, &ns, name, n, Some("scale"), &opts)
                        .map(|o| scale_of(&o))
                })?,
                Some("status") | None => {
                    let v = match &view {
                        Some(view) => view.to_storage(v)?,
                        None => v,
                    };
                    let out = write(sh, |st| st.update(sdef, &ns, name, v, sub, &opts))?;
                    served(&view, out)
                }
                Some("ephemeralcontainers") if ephemeral_writes(sh) => {
                    write(sh, |st| st.update(sdef, &ns, name, v, sub, &opts))?
                }
                Some(_) => return Err(method_not_allowed()),
            };
            Ok(json_value(200, &out))
        }
        (Method::PATCH, Some(name), sub) => {
            verb_ok("patch")?;
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/merge-patch+json")
                .to_string();
            let existed = sh.lock().store.get(&def.key(), &ns, name).is_some();
            let out = match sub {
                Some("scale") => write(sh, |st| {
                    let cur = st
                        .store
                        .get(&def.key(), &ns, name)
                        .ok_or_else(|| ApiError::not_found(def, name))?
                        .value();
                    let mut sc = scale_of(&cur);
                    let p: Value = serde_json::from_slice(&body)
                        .map_err(|e| ApiError::bad_request(e.to_string()))?;
                    json_patch::merge(&mut sc, &p);
                    let mut n = cur;
                    n["spec"]["replicas"] = sc["spec"]["replicas"].clone();
                    st.update(sdef, &ns, name, n, Some("scale"), &opts)
                        .map(|o| scale_of(&o))
                })?,
                Some("status") | None => {
                    let out = write(sh, |st| match &view {
                        Some(_) => st.patch_at(sdef, Some(def), &ns, name, &ct, &body, sub, &opts),
                        None => st.patch(sdef, &ns, name, &ct, &body, sub, &opts),
                    })?;
                    served(&view, out)
                }
                Some("ephemeralcontainers") if ephemeral_writes(sh) => {
                    write(sh, |st| st.patch(sdef, &ns, name, &ct, &body, sub, &opts))?
                }
                Some(_) => return Err(method_not_allowed()),
            };
            let code = if existed { 200 } else { 201 };
            Ok(json_value(code, &out))
        }
        (Method::DELETE, Some(name), None) => {
            verb_ok("delete")?;
            let mut opts = opts;
            if let Ok(d) = serde_json::from_slice::<Value>(&body)
                && d["dryRun"][0] == "All"
            {
                opts.dry_run = true;
            }
            let out = write(sh, |st| st.delete(sdef, &ns, name, &opts))?;
            Ok(json_value(200, &served(&view, out)))
        }
        (Method::DELETE, None, None) => {
            verb_ok("deletecollection")?;
            let labels = LabelSelector::parse(q.get("labelSelector").map_or("", |s| s))
                .map_err(ApiError::bad_request)?;
            let fields = FieldSelector::parse(q.get("fieldSelector").map_or("", |s| s))
                .map_err(ApiError::bad_request)?;
            let (items, rv) = write(sh, |st| {
                let rv = st.store.rv;
                let current = st.store.current(&def.key(), t.ns.as_deref());
                let mut items = Vec::new();
                for ((ons, oname), o) in current {
                    if !labels.matches(&o.labels) {
                        continue;
                    }
                    let v = o.value();
                    if !fields.matches(&ons, &oname, Some(&v)) {
                        continue;
                    }
                    if let Ok(d) = st.delete(sdef, &ons, &oname, &opts) {
                        items.push(served(&view, d));
                    }
                }
                (items, rv)
            });
            Ok(json_value(
                200,
                &json!({"kind": format!("{}List", def.kind), "apiVersion": def.api_version(),
                    "metadata": {"resourceVersion": rv.to_string()}, "items": items}),
            ))
        }
        _ => Err(method_not_allowed()),
    }
}

fn scale_of(obj: &Value) -> Value {
    let m = &obj["metadata"];
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
            "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"]},
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(0)},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0)}
    })
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    v: String,
    rv: u64,
    start: ObjKey,
}

fn encode_continue(rv: u64, key: ObjKey) -> String {
    let t = ContinueToken {
        v: "meta.k8s.io/v1".into(),
        rv,
        start: key,
    };
    base64::engine::general_purpose::URL_SAFE.encode(serde_json::to_vec(&t).unwrap_or_default())
}

fn decode_continue(s: &str) -> Result<ContinueToken, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(s)
        .map_err(|_| bad())?;
    serde_json::from_slice(&raw).map_err(|_| bad())
}

fn parse_rv(s: &str) -> Result<u64, ApiError> {
    s.parse()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version: {s:?}")))
}

fn too_large(rv: u64) -> ApiError {
    ApiError::new(
        504,
        "Timeout",
        format!("Too large resource version: {rv}, current: (emulator)"),
    )
}

/// Whether kubectl asks for a server-side table of a resource that defines printer columns
/// (CRDs with `additionalPrinterColumns`; built-ins are answered as lists, which kubectl
/// prints as NAME and AGE).
fn wants_table(headers: &HeaderMap, def: &ResourceDef) -> bool {
    !def.printer_columns.is_empty()
        && headers
            .get(header::ACCEPT)
            .and_then(|a| a.to_str().ok())
            .is_some_and(|a| a.contains("as=Table"))
}

/// A `meta.k8s.io/v1` Table of `items` with the Name column and the printer columns, cells
/// read by their simple JSONPath (`.spec.x.y`), dates shown as ages like the API server does.
fn table(def: &ResourceDef, items: &[Value], metadata: Value) -> Value {
    let mut columns = vec![json!({"name": "Name", "type": "string", "format": "name",
        "description": "Name must be unique within a namespace.", "priority": 0})];
    for c in &def.printer_columns {
        columns.push(json!({
            "name": c["name"], "type": c["type"],
            "format": c.get("format").cloned().unwrap_or(json!("")),
            "description": c.get("description").cloned().unwrap_or(json!("")),
            "priority": c.get("priority").cloned().unwrap_or(json!(0)),
        }));
    }
    let rows: Vec<Value> = items
        .iter()
        .map(|obj| {
            let mut cells = vec![obj["metadata"]["name"].clone()];
            for c in &def.printer_columns {
                let path = c["jsonPath"].as_str().unwrap_or_default();
                let v = column_value(obj, path);
                let cell = match (c["type"].as_str(), v) {
                    (_, Value::Null) => Value::Null,
                    (Some("date"), Value::String(t)) => json!(age_of(t)),
                    (_, v) => v.clone(),
                };
                cells.push(cell);
            }
            json!({"cells": cells, "object": {"kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]}})
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata,
        "columnDefinitions": columns, "rows": rows})
}

/// The value a printer column's JSONPath selects, as the API server's table convertor does
/// (missing keys allowed, the first result wins): `.a.b` and a final union of keys
/// `.a['x','y']` (the first present of `x`, `y`). `Null` when nothing is selected.
fn column_value<'a>(obj: &'a Value, path: &str) -> &'a Value {
    let (dotted, union) = match path.split_once('[') {
        Some((d, rest)) => (d, Some(rest.trim_end_matches(']'))),
        None => (path, None),
    };
    let mut v = obj;
    for seg in dotted
        .trim_start_matches('.')
        .split('.')
        .filter(|s| !s.is_empty())
    {
        v = &v[seg];
    }
    match union {
        None => v,
        Some(keys) => keys
            .split(',')
            .map(|k| k.trim().trim_matches('\'').trim_matches('"'))
            .map(|k| &v[k])
            .find(|x| !x.is_null())
            .unwrap_or(&Value::Null),
    }
}

/// `5s`, `3m20s`, `4h`, `2d3h`... as kubectl shows ages (`<unknown>` for a bad timestamp).
fn age_of(timestamp: &str) -> String {
    let Ok(t) = timestamp.parse::<jiff::Timestamp>() else {
        return "<unknown>".into();
    };
    let secs = jiff::Timestamp::now()
        .as_second()
        .saturating_sub(t.as_second())
        .max(0);
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86_400);
    match secs {
        s if s < 120 => format!("{s}s"),
        _ if m < 10 => format!("{m}m{}s", secs % 60),
        _ if h < 3 => format!("{m}m"),
        _ if h < 8 => format!("{h}h{}m", m % 60),
        _ if h < 48 => format!("{h}h"),
        _ if h < 24 * 8 => format!("{d}d{}h", h % 24),
        _ if d < 365 * 2 => format!("{d}d"),
        _ => format!("{}y{}d", d / 365, d % 365),
    }
}

fn list_bytes(
    sh: &Arc<Shared>,
    def: &ResourceDef,
    ns: Option<&str>,
    q: &HashMap<String, String>,
    view: Option<&View>,
) -> Result<Vec<u8>, ApiError> {
    let labels = LabelSelector::parse(q.get("labelSelector").map_or("", |s| s))
        .map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse(q.get("fieldSelector").map_or("", |s| s))
        .map_err(ApiError::bad_request)?;
    let limit: usize = match q.get("limit").filter(|s| !s.is_empty()) {
        Some(l) => l
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid limit: {l:?}")))?,
        None => 0,
    };
    let page = {
        let st = sh.lock();
        let current = st.store.rv;
        let compacted = st.store.compacted;
        let (at, start) = if let Some(c) = q.get("continue").filter(|s| !s.is_empty()) {
            let tok = decode_continue(c)?;
            if tok.rv < compacted {
                return Err(ApiError::new(
                    410,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                ));
            }
            (tok.rv, Some(tok.start))
        } else {
            let rv = q.get("resourceVersion").map_or("", String::as_str);
            let m = q.get("resourceVersionMatch").map_or("", String::as_str);
            match (rv, m) {
                ("", "") => (current, None),
                ("", _) => {
                    return Err(ApiError::bad_request(
                        "resourceVersionMatch is forbidden unless resourceVersion is provided",
                    ));
                }
                (r, "Exact") | (r, "") if r != "0" && (m == "Exact" || limit > 0) => {
                    let r = parse_rv(r)?;
                    if r < compacted {
                        return Err(ApiError::gone(r, compacted));
                    }
                    if r > current {
                        return Err(too_large(r));
                    }
                    (r, None)
                }
                (r, "NotOlderThan" | "") => {
                    let r = parse_rv(r)?;
                    if r > current {
                        return Err(too_large(r));
                    }
                    (current, None)
                }
                (_, other) => {
                    return Err(ApiError::bad_request(format!(
                        "resourceVersionMatch: Unsupported value: {other:?}"
                    )));
                }
            }
        };
        let page = st
            .store
            .list_page(&def.key(), ns, at, start.as_ref(), limit, &labels, &fields);
        (page, at)
    };
    let (page, at) = page;
    let typed = !is_builtin_group(&def.group);
    let mut out =
        Vec::with_capacity(page.items.iter().map(|o| o.bytes.len() + 1).sum::<usize>() + 256);
    out.extend_from_slice(b"{\"kind\":");
    let _ = serde_json::to_writer(&mut out, &format!("{}List", def.kind));
    out.extend_from_slice(b",\"apiVersion\":");
    let _ = serde_json::to_writer(&mut out, &def.api_version());
    out.extend_from_slice(b",\"metadata\":{\"resourceVersion\":");
    let _ = serde_json::to_writer(&mut out, &at.to_string());
    if let Some(next) = page.next {
        out.extend_from_slice(b",\"continue\":");
        let _ = serde_json::to_writer(&mut out, &encode_continue(at, next));
    }
    out.extend_from_slice(b"},\"items\":[");
    for (i, o) in page.items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match view {
            Some(view) => {
                crate::store::Stored::from_value(&view.out(o.value())).write_item(&mut out, typed)
            }
            None => o.write_item(&mut out, typed),
        }
    }
    out.extend_from_slice(b"]}");
    Ok(out)
}

fn event_line(etype: &str, obj: &[u8]) -> Bytes {
    let mut l = Vec::with_capacity(obj.len() + 32);
    l.extend_from_slice(b"{\"type\":\"");
    l.extend_from_slice(etype.as_bytes());
    l.extend_from_slice(b"\",\"object\":");
    l.extend_from_slice(obj);
    l.extend_from_slice(b"}\n");
    Bytes::from(l)
}

fn bookmark(def: &ResourceDef, rv: u64, initial_end: bool) -> Bytes {
    let mut o = json!({"kind": def.kind, "apiVersion": def.api_version(),
        "metadata": {"resourceVersion": rv.to_string()}});
    if initial_end {
        o["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    event_line("BOOKMARK", &serde_json::to_vec(&o).unwrap_or_default())
}

fn watch_stream(
    sh: &Arc<Shared>,
    def: &ResourceDef,
    ns: Option<&str>,
    q: &HashMap<String, String>,
    view: Option<View>,
) -> Result<Response, ApiError> {
    fn show<'b>(view: &Option<View>, bytes: &'b [u8]) -> std::borrow::Cow<'b, [u8]> {
        match view {
            Some(v) => std::borrow::Cow::Owned(v.out_bytes(bytes)),
            None => std::borrow::Cow::Borrowed(bytes),
        }
    }
    let shown_view = view.clone();
    let shown = move |bytes: &[u8]| show(&shown_view, bytes).into_owned();
    let labels = LabelSelector::parse(q.get("labelSelector").map_or("", |s| s))
        .map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse(q.get("fieldSelector").map_or("", |s| s))
        .map_err(ApiError::bad_request)?;
    let bookmarks = q
        .get("allowWatchBookmarks")
        .is_some_and(|v| v == "true" || v == "1");
    let send_initial = q.get("sendInitialEvents").is_some_and(|v| v == "true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let rv_param = q.get("resourceVersion").cloned().unwrap_or_default();
    let matches = {
        let labels = labels.clone();
        let fields = fields.clone();
        let ns = ns.map(str::to_string);
        move |ens: &str, ename: &str, obj: &crate::store::Stored| {
            if ns.as_deref().is_some_and(|n| n != ens) {
                return false;
            }
            if !labels.matches(&obj.labels) {
                return false;
            }
            if fields.is_empty() {
                return true;
            }
            let body = fields.needs_body().then(|| obj.value());
            fields.matches(ens, ename, body.as_ref())
        }
    };
    let mut initial: Vec<Bytes> = Vec::new();
    let (mut rx, start_rv) = {
        let st = sh.lock();
        let rx = st.store.events.subscribe();
        let current = st.store.rv;
        if rv_param.is_empty() || rv_param == "0" || send_initial {
            for ((ens, ename), o) in st.store.current(&def.key(), ns) {
                if matches(&ens, &ename, &o) {
                    initial.push(event_line("ADDED", &shown(&o.bytes)));
                }
            }
            if send_initial {
                initial.push(bookmark(def, current, true));
            }
            (rx, current)
        } else {
            let r = parse_rv(&rv_param)?;
            if r < st.store.compacted {
                let e = ApiError::gone(r, st.store.compacted);
                let line = event_line("ERROR", &serde_json::to_vec(&e.body()).unwrap_or_default());
                return Ok(stream_response(futures::stream::iter(vec![Ok::<
                    _,
                    Infallible,
                >(
                    line
                )])));
            }
            let key = def.key();
            for e in st.store.events_after(r) {
                if e.res == key && matches(&e.ns, &e.name, &e.obj) {
                    initial.push(event_line(e.etype.as_str(), &shown(&e.obj.bytes)));
                }
            }
            (rx, current)
        }
    };
    let (tx, out_rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(256);
    let key = def.key();
    let def = def.clone();
    let mut shutdown = sh.shutdown.clone();
    tokio::spawn(async move {
        for l in initial {
            if tx.send(Ok(l)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last_rv = start_rv;
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                _ = shutdown.changed() => break,
                _ = tick.tick(), if bookmarks => {
                    if tx.send(Ok(bookmark(&def, last_rv, false))).await.is_err() {
                        return;
                    }
                }
                ev = rx.recv() => {
                    let ev = match ev {
                        Ok(ev) => ev,
                        Err(_) => break,
                    };
                    if ev.rv <= start_rv {
                        continue;
                    }
                    last_rv = ev.rv;
                    if ev.res != key || !matches(&ev.ns, &ev.name, &ev.obj) {
                        continue;
                    }
                    let t = match ev.etype {
                        EventType::Added => "ADDED",
                        EventType::Modified => "MODIFIED",
                        EventType::Deleted => "DELETED",
                    };
                    if tx.send(Ok(event_line(t, &shown(&ev.obj.bytes)))).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    Ok(stream_response(
        tokio_stream::wrappers::ReceiverStream::new(out_rx),
    ))
}

fn stream_response<S>(s: S) -> Response
where
    S: futures::Stream<Item = Result<Bytes, Infallible>> + Send + 'static,
{
    let mut r = Response::new(Body::from_stream(s));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

#[cfg(test)]
mod column_tests {
    use super::column_value;
    use serde_json::json;

    #[test]
    fn printer_column_paths_select_like_the_api_server() {
        let obj = json!({"spec": {"backupName": "b1", "n": 3}, "status": {}});
        assert_eq!(column_value(&obj, ".spec.n"), &json!(3));
        assert!(column_value(&obj, ".status.phase").is_null());
        // A union: the first key present wins.
        assert_eq!(
            column_value(&obj, ".spec['snapshotName','backupName']"),
            &json!("b1")
        );
        let both = json!({"spec": {"snapshotName": "s1", "backupName": "b1"}});
        assert_eq!(
            column_value(&both, ".spec['snapshotName','backupName']"),
            &json!("s1")
        );
        assert!(column_value(&json!({"spec": {}}), ".spec['a','b']").is_null());
    }
}
