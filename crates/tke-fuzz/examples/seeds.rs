//! Writes a starting corpus for every fuzz target: `cargo run -p tke-fuzz --example seeds
//! -- DIR` makes `DIR/TARGET/seed-N` (existing files are left alone).
use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/corpus".into()),
    );
    let mut count = std::collections::BTreeMap::<&str, usize>::new();
    for (target, input) in tke_fuzz::seeds() {
        let n = count.entry(target).or_default();
        *n += 1;
        let d = dir.join(target);
        std::fs::create_dir_all(&d)?;
        let path = d.join(format!("seed-{n}"));
        if !path.exists() {
            std::fs::write(path, input)?;
        }
    }
    for (target, n) in count {
        println!("{target}: {n} seed(s) in {}", dir.join(target).display());
    }
    Ok(())
}
