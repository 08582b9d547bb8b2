"""Real servers on 127.0.0.1 for the provider tests: the providers talk to these, never to mocks.

    sendgrid.SendGridServer   POST /v3/mail/send, checked against SendGrid's OpenAPI spec
                              and the limits the live API enforces; faults on demand.
    smtp.SMTPServer           aiosmtpd, storing every message; AUTH, refusals, faults on demand.
    holding.HoldingSMTP       takes each message and answers only when the test says so.

The first two are context managers that bind a free port, run in a thread, and shut down
cleanly.
"""
