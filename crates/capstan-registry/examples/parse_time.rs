fn main() {
    let path = std::env::args().nth(1).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    for _ in 0..5 {
        let t = std::time::Instant::now();
        let s = capstan_registry::file::parse(&text).unwrap();
        let parsed = t.elapsed();
        let index = capstan_registry::ServiceIndex::new();
        let id = capstan_registry::RegistryId {
            kind: capstan_registry::RegistryKind::File,
            name: "f".into(),
        };
        index.replace(&id, s);
        let t2 = std::time::Instant::now();
        let s2 = capstan_registry::file::parse(&text).unwrap();
        let n = index.replace(&id, s2).len();
        println!(
            "parse {:?} replace-same {:?} events {n} bytes {}",
            parsed,
            t2.elapsed(),
            text.len()
        );
    }
}
