# SMTP sink for dr-agent's email notification test: installs aiosmtpd into
# the project's venv. The test starts its own sink on a free loopback port
# with this interpreter. Exports DR_TEST_SMTP_PYTHON.
_venv=$(dr_venv)
"$_venv/bin/python" -c 'import aiosmtpd' 2>/dev/null || "$_venv/bin/pip" install -q 'aiosmtpd==1.4.6' >&2
export DR_TEST_SMTP_PYTHON="$_venv/bin/python"
