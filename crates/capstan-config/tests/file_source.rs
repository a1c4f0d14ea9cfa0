//! The file source: bad objects are rejected without blocking good ones, last good versions
//! survive bad edits, and changes on disk reach the store.

use capstan_api::Kind;
use capstan_config::{ConfigKey, ConfigStore, EventKind, FileSource};
use std::sync::Arc;
use std::time::Duration;

const GOOD: &str = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: NAME, namespace: ns}\nspec:\n  mtls:\n    mode: STRICT\n";
const BAD: &str = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: NAME, namespace: ns}\nspec:\n  mtls:\n    mode: SOMETIMES\n";

fn key(name: &str) -> ConfigKey {
    ConfigKey {
        kind: Kind::PeerAuthentication,
        namespace: "ns".into(),
        name: name.into(),
    }
}

fn opts() -> capstan_api::CheckOptions {
    capstan_api::CheckOptions::default()
}

#[test]
fn one_bad_object_blocks_none_of_the_others() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.yaml"),
        format!(
            "{}---\n{}",
            GOOD.replace("NAME", "a"),
            BAD.replace("NAME", "b")
        ),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("nested")).unwrap();
    std::fs::write(dir.path().join("nested/c.yml"), GOOD.replace("NAME", "c")).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not config").unwrap();
    let store = ConfigStore::new();
    let mut source = FileSource::new(vec![dir.path().to_path_buf()], opts());
    let (load, change) = source.sync(&store);
    assert_eq!(load.rejected.len(), 1);
    assert_eq!(load.rejected[0].result.name, "b");
    assert!(!load.rejected[0].kept_last_good);
    let keys: Vec<ConfigKey> = store.snapshot().objects.keys().cloned().collect();
    assert_eq!(keys, vec![key("a"), key("c")]);
    assert_eq!(change.unwrap().events.len(), 2);
}

#[test]
fn a_bad_edit_keeps_the_last_good_version_and_a_fix_applies() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pa.yaml");
    std::fs::write(&file, GOOD.replace("NAME", "a")).unwrap();
    let store = ConfigStore::new();
    let mut source = FileSource::new(vec![dir.path().to_path_buf()], opts());
    source.sync(&store);
    let rev = store.snapshot().revision;

    std::fs::write(&file, BAD.replace("NAME", "a")).unwrap();
    let (load, change) = source.sync(&store);
    assert!(load.rejected[0].kept_last_good);
    assert_eq!(change, None, "the store must not change on a rejected edit");
    assert_eq!(store.snapshot().revision, rev);

    std::fs::write(
        &file,
        GOOD.replace("NAME", "a").replace("STRICT", "PERMISSIVE"),
    )
    .unwrap();
    let (_, change) = source.sync(&store);
    assert_eq!(change.unwrap().events[0].event, EventKind::Updated);

    std::fs::remove_file(&file).unwrap();
    let (_, change) = source.sync(&store);
    assert_eq!(change.unwrap().events[0].event, EventKind::Deleted);
    assert!(store.snapshot().objects.is_empty());
}

#[tokio::test]
async fn changes_on_disk_are_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), GOOD.replace("NAME", "a")).unwrap();
    let store = Arc::new(ConfigStore::new());
    let mut changes = store.subscribe();
    let source = FileSource::new(vec![dir.path().to_path_buf()], opts());
    let task = tokio::spawn(source.run(store.clone(), Duration::from_millis(50)));

    let first = tokio::time::timeout(Duration::from_secs(10), changes.recv())
        .await
        .expect("initial sync within 10s")
        .unwrap();
    assert_eq!(first.events[0].key, key("a"));

    std::fs::write(dir.path().join("b.yaml"), GOOD.replace("NAME", "b")).unwrap();
    let second = tokio::time::timeout(Duration::from_secs(10), changes.recv())
        .await
        .expect("reload within 10s")
        .unwrap();
    assert_eq!(
        second.events,
        vec![capstan_config::ConfigEvent {
            event: EventKind::Added,
            key: key("b")
        }]
    );
    task.abort();
}
