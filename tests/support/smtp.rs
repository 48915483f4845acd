//! A local SMTP listener for the notification tests: a small tokio server that speaks enough
//! SMTP for a real client (EHLO with STARTTLS and AUTH PLAIN/LOGIN advertised, the STARTTLS
//! upgrade over rustls with an rcgen certificate, MAIL, RCPT, DATA, RSET, NOOP, QUIT) and
//! records what each session delivered: envelope, raw data, whether TLS was on, and any AUTH
//! credentials received (and over what).
//!
//! [`SmtpOptions::starttls`] off gives a server that never offers STARTTLS (but still offers
//! AUTH in clear), to show that a client requiring STARTTLS sends it nothing;
//! [`SmtpOptions::implicit_tls`] one that speaks TLS from the first byte (SMTPS).

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

#[derive(Debug, Clone, Copy)]
pub struct SmtpOptions {
    /// Advertise and accept STARTTLS.
    pub starttls: bool,
    /// TLS from the first byte (SMTPS, what `tls = "tls"` expects) instead.
    pub implicit_tls: bool,
}

impl Default for SmtpOptions {
    fn default() -> Self {
        Self {
            starttls: true,
            implicit_tls: false,
        }
    }
}

/// One message accepted by the server.
#[derive(Debug, Clone)]
pub struct Received {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// Headers and body as sent after DATA, dot-unstuffed, CRLF line ends.
    pub data: String,
    /// Whether the session was under TLS when the message was sent.
    pub tls: bool,
}

/// AUTH credentials a client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    pub user: String,
    pub password: String,
    pub tls: bool,
}

#[derive(Default)]
struct Log {
    messages: Mutex<Vec<Received>>,
    auths: Mutex<Vec<Auth>>,
    connections: AtomicUsize,
}

pub struct SmtpServer {
    pub port: u16,
    /// The CA that signed the server's certificate (for `localhost` and `127.0.0.1`).
    pub ca_file: PathBuf,
    _dir: tempfile::TempDir,
    log: Arc<Log>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SmtpServer {
    pub async fn start(options: SmtpOptions) -> SmtpServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca_pem, acceptor) = tls_acceptor();
        let ca_file = dir.path().join("smtp-ca.pem");
        std::fs::write(&ca_file, ca_pem).expect("write the CA");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let log = Arc::new(Log::default());
        let l = log.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                l.connections.fetch_add(1, Ordering::SeqCst);
                let (l, acceptor) = (l.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let stream: Box<dyn Io> = if options.implicit_tls {
                        match acceptor.accept(socket).await {
                            Ok(s) => Box::new(s),
                            Err(_) => return,
                        }
                    } else {
                        Box::new(socket)
                    };
                    let _ = session(stream, options, acceptor, &l).await;
                });
            }
        });
        SmtpServer {
            port,
            ca_file,
            _dir: dir,
            log,
            task,
        }
    }

    pub fn messages(&self) -> Vec<Received> {
        self.log.messages.lock().unwrap().clone()
    }

    pub fn auths(&self) -> Vec<Auth> {
        self.log.auths.lock().unwrap().clone()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.log.connections.load(Ordering::SeqCst)
    }
}

/// A test CA and a server certificate it signed, for `localhost` and `127.0.0.1`.
fn tls_acceptor() -> (String, TlsAcceptor) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "ldap2exo SMTP test CA");
    let ca_cert = ca.self_signed(&ca_key).expect("self-sign the CA");
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("server key");
    let server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("server params");
    let cert = server.signed_by(&key, &issuer).expect("sign");

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("server certificate");
    (ca_cert.pem(), TlsAcceptor::from(Arc::new(config)))
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One SMTP session; returns when the client quits or goes away.
async fn session(
    stream: Box<dyn Io>,
    options: SmtpOptions,
    acceptor: TlsAcceptor,
    log: &Log,
) -> std::io::Result<()> {
    let mut io = BufReader::new(stream);
    let mut tls = options.implicit_tls;
    let mut envelope: Option<(String, Vec<String>)> = None;
    io.write_all(b"220 localhost ldap2exo test ESMTP\r\n")
        .await?;
    io.flush().await?;
    while let Some(line) = read_line(&mut io).await? {
        let upper = line.to_ascii_uppercase();
        let verb = upper.split_whitespace().next().unwrap_or("").to_owned();
        let reply: String = match verb.as_str() {
            "EHLO" => {
                let mut r = String::from("250-localhost\r\n");
                if options.starttls && !tls {
                    r.push_str("250-STARTTLS\r\n");
                }
                r.push_str("250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n");
                r
            }
            "HELO" => "250 localhost\r\n".into(),
            "STARTTLS" if options.starttls && !tls => {
                io.write_all(b"220 go ahead\r\n").await?;
                io.flush().await?;
                let plain = io.into_inner();
                let secured = acceptor.accept(plain).await?;
                io = BufReader::new(Box::new(secured));
                tls = true;
                envelope = None;
                continue;
            }
            "AUTH" => {
                let args: Vec<&str> = line.split_whitespace().skip(1).collect();
                let creds = match args.first().map(|m| m.to_ascii_uppercase()).as_deref() {
                    Some("PLAIN") => {
                        let token = match args.get(1) {
                            Some(t) => t.to_string(),
                            None => ask(&mut io, "334 \r\n").await?,
                        };
                        decode(&token).and_then(|raw| {
                            let mut parts = raw.split('\0').skip(1);
                            Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
                        })
                    }
                    Some("LOGIN") => {
                        let user = ask(&mut io, "334 VXNlcm5hbWU6\r\n").await?;
                        let password = ask(&mut io, "334 UGFzc3dvcmQ6\r\n").await?;
                        decode(&user).zip(decode(&password))
                    }
                    _ => None,
                };
                match creds {
                    Some((user, password)) => {
                        log.auths.lock().unwrap().push(Auth {
                            user,
                            password,
                            tls,
                        });
                        "235 2.7.0 authenticated\r\n".into()
                    }
                    None => "501 5.5.4 bad AUTH\r\n".into(),
                }
            }
            "MAIL" => {
                envelope = Some((path_of(&line), Vec::new()));
                "250 2.1.0 ok\r\n".into()
            }
            "RCPT" => match envelope.as_mut() {
                Some((_, rcpt)) => {
                    rcpt.push(path_of(&line));
                    "250 2.1.5 ok\r\n".into()
                }
                None => "503 5.5.1 MAIL first\r\n".into(),
            },
            "DATA" => match envelope.take() {
                Some((mail_from, rcpt_to)) if !rcpt_to.is_empty() => {
                    io.write_all(b"354 end with .\r\n").await?;
                    io.flush().await?;
                    let data = read_data(&mut io).await?;
                    log.messages.lock().unwrap().push(Received {
                        mail_from,
                        rcpt_to,
                        data,
                        tls,
                    });
                    "250 2.0.0 queued\r\n".into()
                }
                _ => "503 5.5.1 MAIL and RCPT first\r\n".into(),
            },
            "RSET" => {
                envelope = None;
                "250 2.0.0 ok\r\n".into()
            }
            "NOOP" => "250 2.0.0 ok\r\n".into(),
            "QUIT" => {
                io.write_all(b"221 2.0.0 bye\r\n").await?;
                io.flush().await?;
                return Ok(());
            }
            _ => "502 5.5.2 not implemented\r\n".into(),
        };
        io.write_all(reply.as_bytes()).await?;
        io.flush().await?;
    }
    Ok(())
}

/// A line without its CRLF; `None` at end of stream.
async fn read_line<R: AsyncBufReadExt + Unpin>(io: &mut R) -> std::io::Result<Option<String>> {
    let mut line = String::new();
    if io.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    Ok(Some(line.trim_end_matches(['\r', '\n']).to_owned()))
}

async fn ask(io: &mut BufReader<Box<dyn Io>>, prompt: &str) -> std::io::Result<String> {
    io.write_all(prompt.as_bytes()).await?;
    io.flush().await?;
    Ok(read_line(io).await?.unwrap_or_default())
}

/// The message after DATA up to the lone dot, with leading dots unstuffed.
async fn read_data(io: &mut BufReader<Box<dyn Io>>) -> std::io::Result<String> {
    let mut data = String::new();
    while let Some(line) = read_line(io).await? {
        if line == "." {
            break;
        }
        data.push_str(line.strip_prefix('.').unwrap_or(&line));
        data.push_str("\r\n");
    }
    Ok(data)
}

fn decode(b64: &str) -> Option<String> {
    String::from_utf8(B64.decode(b64.trim()).ok()?).ok()
}

/// The address in `MAIL FROM:<a>` / `RCPT TO:<a>`.
fn path_of(line: &str) -> String {
    line.split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(addr, _)| addr.to_owned())
        .unwrap_or_default()
}
