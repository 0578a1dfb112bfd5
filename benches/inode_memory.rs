//! Memory per node of the inode table (issue 14 §6), counted exactly by a
//! counting allocator rather than read off RSS: the bytes the table holds
//! once it knows N secret directories under one folder, each with one key
//! file (what `find` over a folder of N one-key secrets makes the kernel
//! look up), divided by the nodes held.
//!
//!     cargo bench --bench inode_memory            # 1k, 10k, 50k
//!     SECRETFS_TREE_SIZES=1000,100000 cargo bench --bench inode_memory
//!
//! Part of `scripts/bench`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use secretfs::fs::inode::{NodeKind, ROOT_INO};
use secretfs::fs::namespace::{Name, Namespace};
use secretfs::fs::view::Views;
use secretfs::store::{Revision, Secret, SecretPath};

/// The system allocator, counting the bytes in use. What malloc itself
/// keeps per block (8 to 16 bytes) is not counted: the figure is a floor
/// of what RSS shows.
struct Counting;

static IN_USE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        IN_USE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        IN_USE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        IN_USE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn main() {
    let sizes: Vec<usize> = std::env::var("SECRETFS_TREE_SIZES")
        .unwrap_or_else(|_| "1000,10000,50000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let keys = Views::for_layout()
        .iter()
        .next()
        .map(|(id, _)| id)
        .expect("the keys view");
    println!("inode table memory (counting allocator; secrets of one key under one folder)");
    for n in sizes {
        let before = IN_USE.load(Ordering::Relaxed);
        let ns = Namespace::new(SecretPath::parse("team"));
        let folder_path = SecretPath::parse("team/apps");
        let folder = ns.remember(
            Name {
                parent: ROOT_INO,
                name: "apps",
            },
            NodeKind::Dir {
                path: folder_path.clone(),
            },
            true,
        );
        for i in 0..n {
            let name = format!("service-{i:06}");
            let secret = folder_path.join(&name);
            let dir = ns.remember(
                Name {
                    parent: folder,
                    name: &name,
                },
                NodeKind::Dir {
                    path: secret.clone(),
                },
                true,
            );
            ns.remember(
                Name {
                    parent: dir,
                    name: "PASSWORD",
                },
                NodeKind::File {
                    secret,
                    view: keys,
                    name: "PASSWORD".into(),
                },
                true,
            );
        }
        let held = ns.len();
        let bytes = IN_USE.load(Ordering::Relaxed) - before;
        println!(
            "  {n:>7} secrets: {held:>7} nodes, {:>6.1} MiB, {:>4.0} bytes per node",
            bytes as f64 / 1048576.0,
            bytes as f64 / held as f64
        );
        drop(ns);
    }
    secret_memory();
}

/// What one cached one-key secret holds (a version a file was shown keeps
/// one alive until the sweep, whether or not the cache still has it).
fn secret_memory() {
    const N: usize = 10_000;
    let before = IN_USE.load(Ordering::Relaxed);
    let secrets: Vec<std::sync::Arc<Secret>> = (0..N)
        .map(|i| {
            let data = serde_json::json!({ "PASSWORD": format!("{i:032}") });
            let map = data.as_object().cloned().unwrap_or_default();
            std::sync::Arc::new(Secret::from_json_map(
                &map,
                Some(Revision::new("3")),
                Some(std::time::SystemTime::now()),
            ))
        })
        .collect();
    let bytes = IN_USE.load(Ordering::Relaxed) - before;
    println!(
        "  a one-key secret (32-byte value) in memory: {:.0} bytes",
        bytes as f64 / N as f64
    );
    drop(secrets);
}
