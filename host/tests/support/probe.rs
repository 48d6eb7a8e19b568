//! A tiny std-only program that runs inside the test image (`FROM scratch` + this binary,
//! linked statically). The docker tests compile it with `rustc`; they also include it as a
//! module so that fmt and clippy see it.
//!
//! Arguments are steps, run in order: `name` or `name:arg`.
//!
//! | step | effect |
//! |---|---|
//! | `out:<path>` | append every later result line to `<path>` |
//! | `ids` | report effective uid/gid, CapEff, CapBnd, NoNewPrivs |
//! | `net` | report the network interfaces (from /proc/net/dev) |
//! | `write:<path>` | try to create and write `<path>`; report `ok` or the errno |
//! | `env:<NAME>` | report the variable's value |
//! | `threads:<n>` | try to start n sleeping threads; report how many started |
//! | `hog:<MiB>` | allocate and touch that much memory |
//! | `touch:<path>` | create an empty file (no report) |
//! | `stderr:<text>` | print text to stderr |
//! | `mark:<text>` | report the text (tests wait for a final mark) |
//! | `sleep:<secs>` | sleep |
//! | `exit:<code>` | exit with that code |

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::time::Duration;

struct Reporter {
    out: Option<File>,
}

impl Reporter {
    fn line(&mut self, text: &str) {
        println!("{text}");
        if let Some(f) = &mut self.out {
            // Best effort: a failing report shows up as a missing line in the test.
            let _ = writeln!(f, "{text}");
            let _ = f.sync_data();
        }
    }
}

fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".to_owned())
}

fn step(rep: &mut Reporter, name: &str, arg: &str) -> Result<(), String> {
    match name {
        "out" => {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(arg)
                .map_err(|e| format!("open {arg}: {e}"))?;
            rep.out = Some(f);
        }
        "ids" => {
            let status = std::fs::read_to_string("/proc/self/status")
                .map_err(|e| format!("/proc/self/status: {e}"))?;
            let uid = status_field(&status, "Uid:");
            let gid = status_field(&status, "Gid:");
            // Uid: real effective saved fs
            rep.line(&format!("uid={}", uid.split(' ').nth(1).unwrap_or("?")));
            rep.line(&format!("gid={}", gid.split(' ').nth(1).unwrap_or("?")));
            rep.line(&format!("cap_eff={}", status_field(&status, "CapEff:")));
            rep.line(&format!("cap_bnd={}", status_field(&status, "CapBnd:")));
            rep.line(&format!(
                "no_new_privs={}",
                status_field(&status, "NoNewPrivs:")
            ));
        }
        "net" => {
            let dev = std::fs::read_to_string("/proc/net/dev")
                .map_err(|e| format!("/proc/net/dev: {e}"))?;
            let mut ifaces: Vec<&str> = dev
                .lines()
                .skip(2)
                .filter_map(|l| l.split(':').next())
                .map(str::trim)
                .collect();
            ifaces.sort_unstable();
            rep.line(&format!("net={}", ifaces.join(",")));
        }
        "write" => {
            let result = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(arg)
                .and_then(|mut f| f.write_all(b"written by probe\n"));
            match result {
                Ok(()) => rep.line(&format!("write {arg} ok")),
                Err(e) => rep.line(&format!(
                    "write {arg} errno={}",
                    e.raw_os_error().unwrap_or(-1)
                )),
            }
        }
        "env" => {
            let value = std::env::var(arg).unwrap_or_else(|_| "<unset>".to_owned());
            rep.line(&format!("env {arg}={value}"));
        }
        "threads" => {
            let n: usize = arg.parse().map_err(|_| format!("bad count {arg}"))?;
            let mut started = 0;
            let mut handles = Vec::new();
            for _ in 0..n {
                match std::thread::Builder::new()
                    .stack_size(64 * 1024)
                    .spawn(|| std::thread::sleep(Duration::from_secs(2)))
                {
                    Ok(h) => {
                        started += 1;
                        handles.push(h);
                    }
                    Err(_) => break,
                }
            }
            rep.line(&format!("threads {started}"));
            for h in handles {
                let _ = h.join();
            }
        }
        "hog" => {
            let mib: usize = arg.parse().map_err(|_| format!("bad size {arg}"))?;
            let mut blocks = Vec::new();
            for _ in 0..mib {
                // Touch every page so the memory is really committed.
                blocks.push(vec![1u8; 1024 * 1024]);
            }
            rep.line(&format!("hog survived {}", blocks.len()));
        }
        "touch" => {
            File::create(arg).map_err(|e| format!("touch {arg}: {e}"))?;
        }
        "stderr" => eprintln!("{arg}"),
        "mark" => rep.line(arg),
        "sleep" => {
            let secs: u64 = arg.parse().map_err(|_| format!("bad secs {arg}"))?;
            std::thread::sleep(Duration::from_secs(secs));
        }
        "exit" => {
            let code: i32 = arg.parse().map_err(|_| format!("bad code {arg}"))?;
            std::process::exit(code);
        }
        other => return Err(format!("unknown step {other}")),
    }
    Ok(())
}

pub fn main() {
    let mut rep = Reporter { out: None };
    for raw in std::env::args().skip(1) {
        let (name, arg) = raw.split_once(':').unwrap_or((raw.as_str(), ""));
        if let Err(e) = step(&mut rep, name, arg) {
            eprintln!("probe: {e}");
            std::process::exit(100);
        }
    }
}
