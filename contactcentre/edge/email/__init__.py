"""The e-mail channel: SMTP in (aiosmtpd), threading, acknowledgements, replies out."""
