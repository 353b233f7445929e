//! Builds the optional C peers of the benchmarks.
//!
//! liburcu's memb flavour (`rcu-read`'s `liburcu-memb` variant) is compiled in when its header
//! and library are installed (`scripts/install-peers.sh` installs Debian's `liburcu-dev`): the
//! shim `csrc/urcu_memb_read.c` is built with the `cc` crate and the cfg `have_liburcu_memb` is
//! set. Without the library the bench builds as before and the scenario says in one line that
//! it skipped the peer. `SHRINKER_BENCH_NO_LIBURCU=1` builds without it even when installed.
//! Installing or removing liburcu reruns this script on the next build (it watches the header
//! it found, or the include directories where it would appear).

use std::path::{Path, PathBuf};
use std::process::Command;

const SHIM: &str = "csrc/urcu_memb_read.c";

fn main() {
    println!("cargo::rustc-check-cfg=cfg(have_liburcu_memb)");
    println!("cargo::rerun-if-changed={SHIM}");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=SHRINKER_BENCH_NO_LIBURCU");
    println!("cargo::rerun-if-env-changed=PKG_CONFIG_PATH");
    if std::env::var_os("SHRINKER_BENCH_NO_LIBURCU").is_some_and(|v| !v.is_empty() && v != "0") {
        return;
    }
    let Some(include) = find_liburcu_memb() else {
        // Rerun when liburcu gets installed: it adds a directory under one of these, which
        // changes the directory's mtime (cargo scans a watched directory's tree).
        for dir in ["/usr/include", "/usr/local/include"] {
            if Path::new(dir).is_dir() {
                println!("cargo::rerun-if-changed={dir}");
            }
        }
        return;
    };
    // Rerun when it is removed or upgraded (pkg-config leaves out the default include dirs).
    let defaults = [
        PathBuf::from("/usr/include"),
        PathBuf::from("/usr/local/include"),
    ];
    if let Some(header) = include
        .iter()
        .chain(&defaults)
        .map(|dir| dir.join("urcu/urcu-memb.h"))
        .find(|header| header.is_file())
    {
        println!("cargo::rerun-if-changed={}", header.display());
    }
    let mut build = cc::Build::new();
    // -fPIE, not cc's default -fPIC: what a C program built with a distribution's default
    // flags gets (the bench is a position-independent executable too). The shim then reaches
    // `urcu_memb_gp` and `urcu_memb_has_sys_membarrier` directly, not through the GOT on every
    // section, the strongest form of the peer.
    build
        .file(SHIM)
        .opt_level(2)
        .warnings(true)
        .pic(false)
        .flag("-fPIE");
    for dir in &include {
        build.include(dir);
    }
    // try_compile: a header that is there but unusable (another version, another ABI) leaves
    // the bench without the peer rather than failing the build.
    match build.try_compile("shrinker_bench_urcu_memb") {
        Ok(()) => {
            println!("cargo::rustc-link-lib=urcu-memb");
            println!("cargo::rustc-link-lib=urcu-common");
            println!("cargo::rustc-cfg=have_liburcu_memb");
        }
        Err(e) => println!("cargo::warning=liburcu-memb found but the shim did not build: {e}"),
    }
}

/// The include directories for `<urcu/urcu-memb.h>` if liburcu-memb is installed: from
/// pkg-config (`liburcu-memb`), else from the usual header and library paths.
fn find_liburcu_memb() -> Option<Vec<PathBuf>> {
    if let Ok(out) = Command::new("pkg-config")
        .args(["--cflags-only-I", "liburcu-memb"])
        .output()
    {
        if out.status.success() {
            let flags = String::from_utf8_lossy(&out.stdout);
            let dirs = flags
                .split_whitespace()
                .filter_map(|f| f.strip_prefix("-I"))
                .map(PathBuf::from)
                .collect();
            if let Ok(out) = Command::new("pkg-config")
                .args(["--libs-only-L", "liburcu-memb"])
                .output()
            {
                for dir in String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .filter_map(|f| f.strip_prefix("-L"))
                {
                    println!("cargo::rustc-link-search=native={dir}");
                }
            }
            return Some(dirs);
        }
    }
    // No pkg-config: look where distributions put it.
    let multiarch = format!(
        "{}-linux-gnu",
        std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default()
    );
    let prefixes = ["/usr", "/usr/local"];
    let header = prefixes.iter().find_map(|p| {
        [format!("{p}/include"), format!("{p}/include/{multiarch}")]
            .into_iter()
            .map(PathBuf::from)
            .find(|d| d.join("urcu/urcu-memb.h").is_file())
    })?;
    let lib = prefixes.iter().find_map(|p| {
        [
            format!("{p}/lib"),
            format!("{p}/lib/{multiarch}"),
            format!("{p}/lib64"),
        ]
        .into_iter()
        .map(PathBuf::from)
        .find(|d| d.join("liburcu-memb.so").exists() || d.join("liburcu-memb.a").exists())
    })?;
    println!("cargo::rustc-link-search=native={}", lib.display());
    Some(vec![header])
}
