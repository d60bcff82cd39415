//! Decoding of the Kubernetes protobuf wire format (`application/vnd.kubernetes.protobuf`)
//! for the few built-in kinds `kubectl create <kind>` sends that way (ConfigMap, Secret,
//! Namespace, ServiceAccount, Service). The result is the equivalent JSON object.
//!
//! Schema-driven and partial: unknown fields are skipped; unsupported kinds are an error.

use base64::Engine;
use serde_json::{Map, Value, json};

#[derive(Clone, Copy)]
enum F {
    Str,
    Int,
    Bool,
    Msg(&'static [Field]),
    MapStr,
    MapBytes,
    RepStr,
    RepMsg(&'static [Field]),
    IntOrStr,
    Time,
}

type Field = (u32, &'static str, F);

const OWNER_REF: &[Field] = &[
    (1, "kind", F::Str),
    (3, "name", F::Str),
    (4, "uid", F::Str),
    (5, "apiVersion", F::Str),
    (6, "controller", F::Bool),
    (7, "blockOwnerDeletion", F::Bool),
];
const OBJECT_META: &[Field] = &[
    (1, "name", F::Str),
    (2, "generateName", F::Str),
    (3, "namespace", F::Str),
    (5, "uid", F::Str),
    (6, "resourceVersion", F::Str),
    (7, "generation", F::Int),
    (8, "creationTimestamp", F::Time),
    (9, "deletionTimestamp", F::Time),
    (11, "labels", F::MapStr),
    (12, "annotations", F::MapStr),
    (13, "ownerReferences", F::RepMsg(OWNER_REF)),
    (14, "finalizers", F::RepStr),
];
const CONFIG_MAP: &[Field] = &[
    (1, "metadata", F::Msg(OBJECT_META)),
    (2, "data", F::MapStr),
    (3, "binaryData", F::MapBytes),
    (4, "immutable", F::Bool),
];
const SECRET: &[Field] = &[
    (1, "metadata", F::Msg(OBJECT_META)),
    (2, "data", F::MapBytes),
    (3, "type", F::Str),
    (4, "stringData", F::MapStr),
    (5, "immutable", F::Bool),
];
const NS_SPEC: &[Field] = &[(1, "finalizers", F::RepStr)];
const NAMESPACE: &[Field] = &[
    (1, "metadata", F::Msg(OBJECT_META)),
    (2, "spec", F::Msg(NS_SPEC)),
];
const LOCAL_REF: &[Field] = &[(1, "name", F::Str)];
const OBJECT_REF: &[Field] = &[
    (1, "kind", F::Str),
    (2, "namespace", F::Str),
    (3, "name", F::Str),
    (4, "uid", F::Str),
    (5, "apiVersion", F::Str),
];
const SERVICE_ACCOUNT: &[Field] = &[
    (1, "metadata", F::Msg(OBJECT_META)),
    (2, "secrets", F::RepMsg(OBJECT_REF)),
    (3, "imagePullSecrets", F::RepMsg(LOCAL_REF)),
    (4, "automountServiceAccountToken", F::Bool),
];
const SERVICE_PORT: &[Field] = &[
    (1, "name", F::Str),
    (2, "protocol", F::Str),
    (3, "port", F::Int),
    (4, "targetPort", F::IntOrStr),
    (5, "nodePort", F::Int),
    (6, "appProtocol", F::Str),
];
const SERVICE_SPEC: &[Field] = &[
    (1, "ports", F::RepMsg(SERVICE_PORT)),
    (2, "selector", F::MapStr),
    (3, "clusterIP", F::Str),
    (4, "type", F::Str),
    (5, "externalIPs", F::RepStr),
    (7, "sessionAffinity", F::Str),
    (8, "loadBalancerIP", F::Str),
    (9, "loadBalancerSourceRanges", F::RepStr),
    (10, "externalName", F::Str),
    (11, "externalTrafficPolicy", F::Str),
    (12, "healthCheckNodePort", F::Int),
    (13, "publishNotReadyAddresses", F::Bool),
    (17, "ipFamilyPolicy", F::Str),
    (18, "clusterIPs", F::RepStr),
    (19, "ipFamilies", F::RepStr),
    (20, "allocateLoadBalancerNodePorts", F::Bool),
    (21, "loadBalancerClass", F::Str),
    (22, "internalTrafficPolicy", F::Str),
];
const SERVICE: &[Field] = &[
    (1, "metadata", F::Msg(OBJECT_META)),
    (2, "spec", F::Msg(SERVICE_SPEC)),
];

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut out = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.b.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            out |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(out);
            }
        }
        Err("varint too long".into())
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let len = usize::try_from(self.varint()?).map_err(|_| "length overflow")?;
        let end = self.pos.checked_add(len).ok_or("length overflow")?;
        let s = self.b.get(self.pos..end).ok_or("truncated field")?;
        self.pos = end;
        Ok(s)
    }

    /// Next (field number, wire type); skips nothing.
    fn tag(&mut self) -> Result<Option<(u32, u8)>, String> {
        if self.pos >= self.b.len() {
            return Ok(None);
        }
        let t = self.varint()?;
        Ok(Some(((t >> 3) as u32, (t & 7) as u8)))
    }

    fn skip(&mut self, wire: u8) -> Result<(), String> {
        match wire {
            0 => {
                self.varint()?;
            }
            1 => self.pos += 8,
            2 => {
                self.bytes()?;
            }
            5 => self.pos += 4,
            w => return Err(format!("unsupported wire type {w}")),
        }
        Ok(())
    }
}

fn utf8(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "invalid UTF-8 in a string field".to_string())
}

fn map_entry(b: &[u8], bytes_value: bool) -> Result<(String, Value), String> {
    let mut r = Reader { b, pos: 0 };
    let (mut k, mut v) = (String::new(), Value::String(String::new()));
    while let Some((n, w)) = r.tag()? {
        match (n, w) {
            (1, 2) => k = utf8(r.bytes()?)?,
            (2, 2) => {
                let raw = r.bytes()?;
                v = if bytes_value {
                    json!(base64::engine::general_purpose::STANDARD.encode(raw))
                } else {
                    json!(utf8(raw)?)
                };
            }
            (_, w) => r.skip(w)?,
        }
    }
    Ok((k, v))
}

fn message(b: &[u8], schema: &[Field]) -> Result<Value, String> {
    let mut r = Reader { b, pos: 0 };
    let mut out = Map::new();
    while let Some((n, w)) = r.tag()? {
        let Some((_, name, ty)) = schema.iter().find(|f| f.0 == n) else {
            r.skip(w)?;
            continue;
        };
        let name = (*name).to_string();
        match (*ty, w) {
            (F::Str, 2) => {
                let s = utf8(r.bytes()?)?;
                if !s.is_empty() {
                    out.insert(name, json!(s));
                }
            }
            (F::Int, 0) => {
                let v = r.varint()? as i64;
                if v != 0 {
                    out.insert(name, json!(v));
                }
            }
            (F::Bool, 0) => {
                let v = r.varint()? != 0;
                out.insert(name, json!(v));
            }
            (F::Msg(s), 2) => {
                let v = message(r.bytes()?, s)?;
                if v.as_object().is_some_and(|m| !m.is_empty()) {
                    out.insert(name, v);
                }
            }
            (F::MapStr | F::MapBytes, 2) => {
                let (k, v) = map_entry(r.bytes()?, matches!(ty, F::MapBytes))?;
                out.entry(name)
                    .or_insert_with(|| json!({}))
                    .as_object_mut()
                    .map(|m| m.insert(k, v));
            }
            (F::RepStr, 2) => {
                let s = utf8(r.bytes()?)?;
                if let Some(a) = out.entry(name).or_insert_with(|| json!([])).as_array_mut() {
                    a.push(json!(s));
                }
            }
            (F::RepMsg(s), 2) => {
                let v = message(r.bytes()?, s)?;
                if let Some(a) = out.entry(name).or_insert_with(|| json!([])).as_array_mut() {
                    a.push(v);
                }
            }
            (F::IntOrStr, 2) => {
                let mut ir = Reader {
                    b: r.bytes()?,
                    pos: 0,
                };
                let (mut ty, mut iv, mut sv) = (0u64, 0i64, String::new());
                while let Some((n, w)) = ir.tag()? {
                    match (n, w) {
                        (1, 0) => ty = ir.varint()?,
                        (2, 0) => iv = ir.varint()? as i64,
                        (3, 2) => sv = utf8(ir.bytes()?)?,
                        (_, w) => ir.skip(w)?,
                    }
                }
                let v = if ty == 1 { json!(sv) } else { json!(iv) };
                if v != json!(0) {
                    out.insert(name, v);
                }
            }
            (F::Time, 2) => {
                let mut tr = Reader {
                    b: r.bytes()?,
                    pos: 0,
                };
                let mut secs = 0i64;
                while let Some((n, w)) = tr.tag()? {
                    match (n, w) {
                        (1, 0) => secs = tr.varint()? as i64,
                        (_, w) => tr.skip(w)?,
                    }
                }
                if secs > 0
                    && let Ok(ts) = jiff::Timestamp::from_second(secs)
                {
                    out.insert(name, json!(ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()));
                }
            }
            (_, w) => r.skip(w)?,
        }
    }
    Ok(Value::Object(out))
}

/// Decode a `k8s\0`-prefixed `runtime.Unknown` envelope into a JSON object.
pub(crate) fn decode(body: &[u8]) -> Result<Value, String> {
    let rest = body
        .strip_prefix(b"k8s\0")
        .ok_or("missing the protobuf magic prefix")?;
    let mut r = Reader { b: rest, pos: 0 };
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    while let Some((n, w)) = r.tag()? {
        match (n, w) {
            (1, 2) => {
                let mut tr = Reader {
                    b: r.bytes()?,
                    pos: 0,
                };
                while let Some((n, w)) = tr.tag()? {
                    match (n, w) {
                        (1, 2) => api_version = utf8(tr.bytes()?)?,
                        (2, 2) => kind = utf8(tr.bytes()?)?,
                        (_, w) => tr.skip(w)?,
                    }
                }
            }
            (2, 2) => raw = r.bytes()?,
            (_, w) => r.skip(w)?,
        }
    }
    let schema = match (api_version.as_str(), kind.as_str()) {
        ("v1", "ConfigMap") => CONFIG_MAP,
        ("v1", "Secret") => SECRET,
        ("v1", "Namespace") => NAMESPACE,
        ("v1", "ServiceAccount") => SERVICE_ACCOUNT,
        ("v1", "Service") => SERVICE,
        _ => {
            return Err(format!(
                "protobuf bodies of kind {kind} ({api_version}) are not supported by the emulator; send JSON (e.g. kubectl apply)"
            ));
        }
    };
    let mut v = message(raw, schema)?;
    v["apiVersion"] = json!(api_version);
    v["kind"] = json!(kind);
    Ok(v)
}
