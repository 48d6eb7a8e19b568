//! A flat apt repository served on 127.0.0.1, for the tests that install packages into an
//! agent's image (`install_packages`): no traffic leaves the machine.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A package for [`repo`]: its name and files (path under `/`, contents; executable).
pub type Package<'a> = (&'a str, &'a [(&'a str, &'a str)]);

/// Builds `<dir>/repo/`, a flat repository (`deb [trusted=yes] http://…/ ./`) holding
/// `packages` (version 1.0, all architectures). Returns the repository directory.
pub fn repo(dir: &Path, packages: &[Package<'_>]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    for (name, files) in packages {
        let pkg = dir.join("pkg").join(name);
        std::fs::create_dir_all(pkg.join("DEBIAN")).unwrap();
        std::fs::write(
            pkg.join("DEBIAN/control"),
            format!(
                "Package: {name}\nVersion: 1.0\nArchitecture: all\nMaintainer: NanoClaw tests <tests@localhost>\nDescription: a package served by the test\n"
            ),
        )
        .unwrap();
        for (path, contents) in *files {
            let file = pkg.join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, contents).unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let st = Command::new("dpkg-deb")
            .args(["--root-owner-group", "--build"])
            .arg(&pkg)
            .arg(repo.join(format!("{name}_1.0_all.deb")))
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
    }
    let scan = Command::new("dpkg-scanpackages")
        .args([".", "/dev/null"])
        .current_dir(&repo)
        .output()
        .expect("dpkg-scanpackages (package dpkg-dev; scripts/deps.sh installs it)");
    assert!(
        scan.status.success(),
        "{}",
        String::from_utf8_lossy(&scan.stderr)
    );
    std::fs::write(repo.join("Packages"), &scan.stdout).unwrap();
    repo
}

/// Serves `dir` on 127.0.0.1 (a tiny HTTP/1.0 GET server) until dropped.
pub struct Served {
    pub port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Served {
    pub fn start(dir: PathBuf) -> Served {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = [0u8; 4096];
                let n = conn.read(&mut buf).unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]);
                let mut parts = req.split_whitespace();
                let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
                let name = path.trim_start_matches('/').trim_start_matches("./");
                let file = (!name.contains("..") && !name.is_empty())
                    .then(|| std::fs::read(dir.join(name)).ok())
                    .flatten();
                let _ = match file {
                    Some(body) => {
                        let _ = write!(
                            conn,
                            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        if method == "GET" {
                            conn.write_all(&body)
                        } else {
                            Ok(())
                        }
                    }
                    None => write!(
                        conn,
                        "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    ),
                };
            }
        });
        Served { port, stop }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
