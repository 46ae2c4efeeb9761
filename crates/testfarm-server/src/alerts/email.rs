//! Email delivery through an SMTP server (lettre, rustls). `tls` is `none` (plain SMTP,
//! for a relay on localhost), `starttls` (upgrade on the submission port) or `tls`
//! (implicit TLS, port 465). A server that cannot be reached fails the attempt with the
//! reason; the notifier retries it and finally leaves it `undelivered`.

use std::time::Duration;

use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use testfarm_api::alert::AlertNotification;

use crate::config::{EmailConfig, SmtpTls};

pub fn subject(note: &AlertNotification) -> String {
    let a = &note.alert;
    let what = if note.event == "resolved" {
        "RESOLVED".to_string()
    } else {
        a.severity.as_str().to_uppercase()
    };
    format!("[testfarm {what}] {}: {}", a.rule, a.subject)
}

pub fn body(note: &AlertNotification) -> String {
    let a = &note.alert;
    let mut s = format!(
        "{}\n\nrule:       {}\nsubject:    {}\nseverity:   {}\nstate:      {}\nfirst seen: {}\nlast seen:  {}\ncount:      {}\nalert id:   {}\n",
        a.summary,
        a.rule,
        a.subject,
        a.severity,
        a.state.as_str(),
        a.first_seen.to_rfc3339(),
        a.last_seen.to_rfc3339(),
        a.count,
        a.id
    );
    if let Some(at) = a.resolved_at {
        s.push_str(&format!(
            "resolved:   {} by {}\n",
            at.to_rfc3339(),
            a.resolved_by.as_deref().unwrap_or("?")
        ));
    }
    s.push_str(&format!("\ntestfarm alerts show {}\n", a.id));
    s
}

pub async fn send(
    cfg: &EmailConfig,
    password: Option<&str>,
    timeout: Duration,
    note: &AlertNotification,
) -> Result<(), String> {
    let from: Mailbox = cfg.from.parse().map_err(|e| format!("from: {e}"))?;
    let mut msg = Message::builder().from(from).subject(subject(note));
    for to in &cfg.to {
        msg = msg.to(to.parse().map_err(|e| format!("to {to:?}: {e}"))?);
    }
    let msg = msg
        .header(lettre::message::header::ContentType::TEXT_PLAIN)
        .body(body(note))
        .map_err(|e| format!("cannot build the message: {e}"))?;
    let builder = match cfg.tls {
        SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&cfg.host),
        SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&cfg.host)
            .map_err(|e| format!("smtp {}: {e}", cfg.host))?,
        SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&cfg.host)
            .map_err(|e| format!("smtp {}: {e}", cfg.host))?,
    };
    let mut builder = builder.port(cfg.port).timeout(Some(timeout));
    if let Some(user) = &cfg.username {
        builder = builder.credentials(Credentials::new(
            user.clone(),
            password.unwrap_or_default().to_string(),
        ));
    }
    let transport = builder.build();
    let sent = tokio::time::timeout(timeout, transport.send(msg)).await;
    match sent {
        Err(_) => Err(format!(
            "smtp {}:{}: no answer within {}",
            cfg.host,
            cfg.port,
            testfarm_core::duration::format(timeout)
        )),
        Ok(Err(e)) => Err(format!("smtp {}:{}: {}", cfg.host, cfg.port, chain(&e))),
        Ok(Ok(_)) => Ok(()),
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
