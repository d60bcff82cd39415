//! Generic storage through `kube`: metadata, errors, history, pagination, selectors,
//! conflicts, dryRun, status subresource, patches, finalizers, namespace deletion.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, VersionMatch};
use serde_json::json;

use crate::{api_err, cm, create_cm, eventually, start};

#[tokio::test]
async fn create_get_errors_and_metadata() {
    let emu = start().await;
    let c = emu.client().await;
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let before = emu.resource_version();
    let a = create_cm(&c, "default", "a").await;
    let m = &a.metadata;
    assert!(m.uid.as_deref().is_some_and(|u| u.len() == 36));
    let rv: u64 = m.resource_version.as_deref().unwrap().parse().unwrap();
    assert!(rv > before);
    assert!(m.creation_timestamp.is_some());
    assert!(m.managed_fields.as_ref().is_some_and(|f| !f.is_empty()));
    let e = api_err(
        api.create(&PostParams::default(), &cm("a", json!({})))
            .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(e.message, "configmaps \"a\" already exists");
    let e = api_err(api.get("missing").await);
    assert_eq!((e.code, e.reason.as_str()), (404, "NotFound"));
    assert_eq!(e.message, "configmaps \"missing\" not found");
    let e = api_err(
        Api::<ConfigMap>::namespaced(c.clone(), "nope")
            .create(&PostParams::default(), &cm("x", json!({})))
            .await,
    );
    assert_eq!(
        (e.code, e.message.as_str()),
        (404, "namespaces \"nope\" not found")
    );
    // generateName
    let mut g = cm("", json!({}));
    g.metadata.name = None;
    g.metadata.generate_name = Some("gen-".into());
    let made = api.create(&PostParams::default(), &g).await.unwrap();
    assert!(made.metadata.name.unwrap().starts_with("gen-"));
    // a body whose namespace differs from the URL
    let mut other = cm("b", json!({}));
    other.metadata.namespace = Some("kube-system".into());
    let e = api_err(api.create(&PostParams::default(), &other).await);
    assert_eq!(e.code, 400);
    emu.shutdown().await;
}

#[tokio::test]
async fn lists_at_old_resource_versions_come_from_history() {
    let emu = start().await;
    let c = emu.client().await;
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    create_cm(&c, "default", "a").await;
    let rv1 = emu.resource_version().to_string();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "changed"}})),
    )
    .await
    .unwrap();
    create_cm(&c, "default", "b").await;
    api.delete("kube-root-ca.crt", &DeleteParams::default())
        .await
        .unwrap();
    let old = api
        .list(&ListParams::default().at(&rv1).matching(VersionMatch::Exact))
        .await
        .unwrap();
    assert_eq!(old.metadata.resource_version.as_deref(), Some(rv1.as_str()));
    let names: Vec<_> = old
        .items
        .iter()
        .map(|o| o.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["a", "kube-root-ca.crt"]);
    assert_eq!(old.items[0].data.as_ref().unwrap()["k"], "a");
    let now = api.list(&ListParams::default()).await.unwrap();
    let names: Vec<_> = now
        .items
        .iter()
        .map(|o| o.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(now.items[0].data.as_ref().unwrap()["k"], "changed");
    emu.shutdown().await;
}

#[tokio::test]
async fn compacted_revisions_answer_410_expired() {
    let emu = kube_emulator::Emulator::builder()
        .compaction_window(5)
        .start()
        .await
        .unwrap();
    let c = emu.client().await;
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let rv0 = emu.resource_version().to_string();
    let page = api.list(&ListParams::default().limit(1)).await.unwrap();
    let token = page.metadata.continue_.clone();
    for i in 0..10 {
        create_cm(&c, "default", &format!("c{i}")).await;
    }
    let e = api_err(
        api.list(&ListParams::default().at(&rv0).matching(VersionMatch::Exact))
            .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
    if let Some(t) = token {
        let e = api_err(
            api.list(&ListParams::default().limit(1).continue_token(&t))
                .await,
        );
        assert_eq!(e.code, 410);
    }
    // a recent revision still works
    let recent = (emu.resource_version() - 2).to_string();
    let l = api
        .list(
            &ListParams::default()
                .at(&recent)
                .matching(VersionMatch::Exact),
        )
        .await
        .unwrap();
    assert!(l.items.len() >= 9);
    emu.shutdown().await;
}

#[tokio::test]
async fn pagination_pins_the_list_revision_and_spans_namespaces() {
    let emu = start().await;
    let c = emu.client().await;
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    for i in 0..7 {
        create_cm(&c, "default", &format!("p{i}")).await;
    }
    let first = api.list(&ListParams::default().limit(3)).await.unwrap();
    assert_eq!(first.items.len(), 3);
    let pinned = first.metadata.resource_version.clone();
    create_cm(&c, "default", "p99").await;
    api.delete("p5", &DeleteParams::default()).await.unwrap();
    let mut names: Vec<String> = first
        .items
        .iter()
        .map(|o| o.metadata.name.clone().unwrap())
        .collect();
    let mut token = first.metadata.continue_.clone();
    while let Some(t) = token.filter(|t| !t.is_empty()) {
        let p = api
            .list(&ListParams::default().limit(3).continue_token(&t))
            .await
            .unwrap();
        assert_eq!(p.metadata.resource_version, pinned);
        names.extend(p.items.iter().map(|o| o.metadata.name.clone().unwrap()));
        token = p.metadata.continue_.clone();
    }
    let want: Vec<String> = ["kube-root-ca.crt".to_string()]
        .into_iter()
        .chain((0..7).map(|i| format!("p{i}")))
        .collect();
    assert_eq!(names, want, "pages show the list as of the first page");
    // all namespaces
    let all: Api<ConfigMap> = Api::all(c.clone());
    let everything = all.list(&ListParams::default()).await.unwrap();
    let mut paged = Vec::new();
    let mut lp = ListParams::default().limit(2);
    loop {
        let p = all.list(&lp).await.unwrap();
        paged.extend(
            p.items
                .iter()
                .map(|o| (o.metadata.namespace.clone(), o.metadata.name.clone())),
        );
        match p.metadata.continue_.filter(|t| !t.is_empty()) {
            Some(t) => lp = ListParams::default().limit(2).continue_token(&t),
            None => break,
        }
    }
    let full: Vec<_> = everything
        .items
        .iter()
        .map(|o| (o.metadata.namespace.clone(), o.metadata.name.clone()))
        .collect();
    assert_eq!(paged, full);
    assert!(
        full.iter()
            .any(|(ns, _)| ns.as_deref() == Some("kube-system"))
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn label_and_field_selectors() {
    let emu = start().await;
    let c = emu.client().await;
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    for (n, l) in [
        ("web", json!({"app": "web", "tier": "front"})),
        ("db", json!({"app": "db"})),
        ("none", json!({})),
    ] {
        api.create(&PostParams::default(), &cm(n, l)).await.unwrap();
    }
    let names = |sel: &'static str, field: bool| {
        let api = api.clone();
        async move {
            let lp = if field {
                ListParams::default().fields(sel)
            } else {
                ListParams::default().labels(sel)
            };
            let mut v: Vec<String> = api
                .list(&lp)
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|o| o.metadata.name.unwrap())
                .collect();
            v.sort();
            v
        }
    };
    assert_eq!(names("app=web", false).await, ["web"]);
    assert_eq!(names("app==db", false).await, ["db"]);
    assert_eq!(
        names("app!=web", false).await,
        ["db", "kube-root-ca.crt", "none"]
    );
    assert_eq!(names("app in (web,db)", false).await, ["db", "web"]);
    assert_eq!(
        names("app notin (web)", false).await,
        ["db", "kube-root-ca.crt", "none"]
    );
    assert_eq!(names("tier", false).await, ["web"]);
    assert_eq!(names("!app", false).await, ["kube-root-ca.crt", "none"]);
    assert_eq!(names("metadata.name=db", true).await, ["db"]);
    assert_eq!(
        names("metadata.namespace=default,metadata.name!=db", true).await,
        ["kube-root-ca.crt", "none", "web"]
    );
    let all: Api<ConfigMap> = Api::all(c.clone());
    let l = all
        .list(&ListParams::default().fields("metadata.namespace=kube-system"))
        .await
        .unwrap();
    assert_eq!(l.items.len(), 1);
    emu.shutdown().await;
}

#[tokio::test]
async fn update_conflicts_and_dry_run() {
    let emu = start().await;
    let c = emu.client().await;
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let a = create_cm(&c, "default", "a").await;
    let mut fresh = a.clone();
    fresh.data = Some([("k".to_string(), "v2".to_string())].into());
    let updated = api
        .replace("a", &PostParams::default(), &fresh)
        .await
        .unwrap();
    assert_ne!(
        updated.metadata.resource_version,
        a.metadata.resource_version
    );
    assert_eq!(updated.metadata.uid, a.metadata.uid);
    let e = api_err(api.replace("a", &PostParams::default(), &a).await);
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert!(
        e.message.contains("the object has been modified"),
        "{}",
        e.message
    );
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let d = api.create(&dry, &cm("dry", json!({}))).await.unwrap();
    assert_eq!(d.metadata.name.as_deref(), Some("dry"));
    assert_eq!(api_err(api.get("dry").await).code, 404);
    let dp = DeleteParams {
        dry_run: true,
        ..Default::default()
    };
    api.delete("a", &dp).await.unwrap();
    assert!(api.get("a").await.is_ok());
    emu.shutdown().await;
}

#[tokio::test]
async fn status_subresource_and_patch_types() {
    let emu = start().await;
    let c = emu.client().await;
    let api: Api<Deployment> = Api::namespaced(c.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "d"}},
            "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}, {"name": "s", "image": "busybox"}]}}},
        "status": {"replicas": 5}
    }))
    .unwrap();
    let made = api.create(&PostParams::default(), &d).await.unwrap();
    assert!(made.status.is_none(), "status in a create body is dropped");
    assert_eq!(made.metadata.generation, Some(1));
    let s = api
        .patch_status(
            "d",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 2}, "spec": {"replicas": 9}})),
        )
        .await
        .unwrap();
    assert_eq!(s.status.unwrap().replicas, Some(2));
    assert_eq!(s.spec.replicas, Some(1), "/status changes only status");
    let p = api
        .patch(
            "d",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}, "status": {"replicas": 7}})),
        )
        .await
        .unwrap();
    assert_eq!(p.spec.replicas, Some(3));
    assert_eq!(
        p.status.unwrap().replicas,
        Some(2),
        "main resource writes keep status"
    );
    assert_eq!(p.metadata.generation, Some(2));
    let j = api
        .patch(
            "d",
            &PatchParams::default(),
            &Patch::<()>::Json(
                serde_json::from_value(
                    json!([{"op": "replace", "path": "/spec/replicas", "value": 4}]),
                )
                .unwrap(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(j.spec.replicas, Some(4));
    let sm = api
        .patch("d", &PatchParams::default(), &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:2"}]}}}})))
        .await
        .unwrap();
    let containers = sm.spec.template.spec.unwrap().containers;
    assert_eq!(
        containers.len(),
        2,
        "strategic merge keeps other list entries"
    );
    assert_eq!(containers[0].image.as_deref(), Some("nginx:2"));
    let ap = api
        .patch("d2", &PatchParams::apply("test").force(), &Patch::Apply(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d2"},
            "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}})))
        .await
        .unwrap();
    assert_eq!(ap.metadata.name.as_deref(), Some("d2"));
    emu.shutdown().await;
}

#[tokio::test]
async fn finalizers_delay_deletion() {
    let emu = start().await;
    let c = emu.client().await;
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let mut f = cm("f", json!({}));
    f.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    api.create(&PostParams::default(), &f).await.unwrap();
    api.delete("f", &DeleteParams::default()).await.unwrap();
    let held = api.get("f").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    api.patch(
        "f",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(api_err(api.get("f").await).code, 404);
    emu.shutdown().await;
}

#[tokio::test]
async fn namespace_deletion_terminates_then_removes() {
    let emu = start().await;
    let c = emu.client().await;
    let nss: Api<Namespace> = Api::all(c.clone());
    let ns: Namespace = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "gone"}}),
    )
    .unwrap();
    let made = nss.create(&PostParams::default(), &ns).await.unwrap();
    assert_eq!(made.status.unwrap().phase.as_deref(), Some("Active"));
    create_cm(&c, "gone", "x").await;
    nss.delete("gone", &DeleteParams::default()).await.unwrap();
    let t = nss.get("gone").await.unwrap();
    assert_eq!(t.status.unwrap().phase.as_deref(), Some("Terminating"));
    let e = api_err(
        Api::<ConfigMap>::namespaced(c.clone(), "gone")
            .create(&PostParams::default(), &cm("y", json!({})))
            .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"));
    assert!(e.message.contains("being terminated"));
    eventually("namespace removal", || {
        let nss = nss.clone();
        async move { nss.get_opt("gone").await.unwrap().is_none() }
    })
    .await;
    let left = Api::<ConfigMap>::namespaced(c.clone(), "gone")
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(left.items.is_empty());
    emu.shutdown().await;
}

#[tokio::test]
async fn deletecollection_scale_and_create_only_resources() {
    let emu = start().await;
    let c = emu.client().await;
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    for (n, l) in [
        ("x1", json!({"group": "x"})),
        ("x2", json!({"group": "x"})),
        ("y", json!({})),
    ] {
        api.create(&PostParams::default(), &cm(n, l)).await.unwrap();
    }
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("group=x"),
    )
    .await
    .unwrap();
    let left: Vec<String> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|o| o.metadata.name.unwrap())
        .collect();
    assert_eq!(left, ["kube-root-ca.crt", "y"]);
    let deps: Api<Deployment> = Api::namespaced(c.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}})).unwrap();
    deps.create(&PostParams::default(), &d).await.unwrap();
    let scale = deps.get_scale("d").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(1));
    deps.patch_scale(
        "d",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 4}})),
    )
    .await
    .unwrap();
    assert_eq!(deps.get("d").await.unwrap().spec.replicas, Some(4));
    // create-only review resources answer without storing
    let ar = kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("authorization.k8s.io", "v1", "SelfSubjectAccessReview"),
        "selfsubjectaccessreviews",
    );
    let reviews: Api<kube::api::DynamicObject> = Api::all_with(c.clone(), &ar);
    let review: kube::api::DynamicObject = serde_json::from_value(
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "metadata": {}, "spec": {"resourceAttributes": {"verb": "list", "resource": "pods"}}}),
    )
    .unwrap();
    let answered = reviews
        .create(&PostParams::default(), &review)
        .await
        .unwrap();
    assert_eq!(answered.data["status"]["allowed"], true);
    emu.shutdown().await;
}
