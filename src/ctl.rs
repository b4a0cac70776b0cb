//! The local control socket `espgate show` talks to.
//!
//! A Unix stream socket with a one-line protocol: the client sends one
//! request line (`show ike-sa`, `show ipsec-sa json`, `show access-list`),
//! the server writes the answer and closes. The server is one thread that
//! answers connections one at a time through a callback the gateway
//! supplies (`Fn(&str) -> String`), so the protocol knows nothing of SAs.
//! The socket file is mode 0600: SA details are for the gateway's owner.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Longest request line accepted.
pub const MAX_REQUEST: usize = 256;
/// Longest answer a client reads (a gateway with very many SAs is cut off).
pub const MAX_ANSWER: u64 = 64 << 20;
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the accept loop looks at the stop flag.
const POLL: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("{path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: another gateway is already answering on this socket")]
    InUse { path: PathBuf },
    #[error("{path}: exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },
}

fn io_err<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(std::io::Error) -> CtlError + 'a {
    move |source| CtlError::Io {
        path: path.to_path_buf(),
        what,
        source,
    }
}

/// A running control socket; stops and removes the socket file on drop.
pub struct CtlServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl CtlServer {
    /// Binds `path` (creating its directory) and answers each request line
    /// with `handler(line)`. A stale socket file left by a dead gateway is
    /// replaced; a live one is an error.
    pub fn spawn<F>(path: &Path, handler: F) -> Result<CtlServer, CtlError>
    where
        F: Fn(&str) -> String + Send + 'static,
    {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io_err(path, "creating its directory"))?;
        }
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => {
                if UnixStream::connect(path).is_ok() {
                    return Err(CtlError::InUse {
                        path: path.to_path_buf(),
                    });
                }
                std::fs::remove_file(path).map_err(io_err(path, "removing stale socket"))?;
            }
            Ok(_) => {
                return Err(CtlError::NotASocket {
                    path: path.to_path_buf(),
                })
            }
            Err(_) => {}
        }
        let listener = UnixListener::bind(path).map_err(io_err(path, "binding"))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(io_err(path, "setting mode 0600"))?;
        listener
            .set_nonblocking(true)
            .map_err(io_err(path, "setting nonblocking"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("espgate-ctl".into())
            .spawn(move || serve(listener, flag, handler))
            .map_err(io_err(path, "starting thread"))?;
        Ok(CtlServer {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for CtlServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve<F: Fn(&str) -> String>(listener: UnixListener, stop: Arc<AtomicBool>, handler: F) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                // One bad client must not stop the server: errors end only
                // that connection.
                let _ = answer(stream, &handler);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

fn answer<F: Fn(&str) -> String>(stream: UnixStream, handler: &F) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    (&mut reader)
        .take(MAX_REQUEST as u64)
        .read_line(&mut line)?;
    let reply = if !line.ends_with('\n') && line.len() >= MAX_REQUEST {
        // Read the rest of the line (bounded): closing a Unix socket with
        // unread input makes the client's read fail with ECONNRESET.
        let mut rest = Vec::new();
        let _ = (&mut reader)
            .take(MAX_ANSWER.min(1 << 20))
            .read_until(b'\n', &mut rest);
        format!("error: request longer than {MAX_REQUEST} bytes\n")
    } else {
        // A bug in one view must not take the control socket down with it.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(line.trim())))
            .unwrap_or_else(|_| "error: internal error while answering\n".to_string())
    };
    (&stream).write_all(reply.as_bytes())?;
    stream.shutdown(std::net::Shutdown::Both)
}

/// Sends one request line and returns the whole answer.
pub fn request(path: &Path, line: &str) -> Result<String, CtlError> {
    let stream = UnixStream::connect(path).map_err(io_err(
        path,
        "connecting (is `espgate run` running with this control socket?)",
    ))?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .map_err(io_err(path, "setting timeout"))?;
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .map_err(io_err(path, "setting timeout"))?;
    (&stream)
        .write_all(format!("{}\n", line.trim()).as_bytes())
        .map_err(io_err(path, "sending request"))?;
    let mut out = String::new();
    (&stream)
        .take(MAX_ANSWER)
        .read_to_string(&mut out)
        .map_err(io_err(path, "reading answer"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_reaches_the_callback_and_the_answer_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/gw.sock");
        let server = CtlServer::spawn(&path, |req| format!("you said <{req}>\n")).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            request(&path, "show ike-sa").unwrap(),
            "you said <show ike-sa>\n"
        );
        assert_eq!(
            request(&path, "show ipsec-sa json").unwrap(),
            "you said <show ipsec-sa json>\n"
        );
        // A second server on the same live socket is refused.
        assert!(matches!(
            CtlServer::spawn(&path, |_| String::new()),
            Err(CtlError::InUse { .. })
        ));
        // An over-long request gets an error, and the server keeps going.
        let long = "x".repeat(MAX_REQUEST * 2);
        assert!(request(&path, &long)
            .unwrap()
            .starts_with("error: request longer"));
        assert_eq!(request(&path, "again").unwrap(), "you said <again>\n");
        drop(server);
        assert!(!path.exists(), "socket file removed on drop");
        assert!(request(&path, "show ike-sa").is_err());
    }

    #[test]
    fn a_panicking_view_answers_an_error_and_the_server_lives_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gw.sock");
        let _s = CtlServer::spawn(&path, |req| {
            if req == "boom" {
                panic!("view bug");
            }
            "fine\n".into()
        })
        .unwrap();
        assert_eq!(
            request(&path, "boom").unwrap(),
            "error: internal error while answering\n"
        );
        assert_eq!(request(&path, "show ike-sa").unwrap(), "fine\n");
    }

    #[test]
    fn stale_socket_is_replaced_but_other_files_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gw.sock");
        drop(UnixListener::bind(&path).unwrap()); // leaves a dead socket file
        let s = CtlServer::spawn(&path, |_| "ok\n".into()).unwrap();
        assert_eq!(request(&path, "x").unwrap(), "ok\n");
        drop(s);
        let file = dir.path().join("plain");
        std::fs::write(&file, "data").unwrap();
        assert!(matches!(
            CtlServer::spawn(&file, |_| String::new()),
            Err(CtlError::NotASocket { .. })
        ));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "data");
    }
}
