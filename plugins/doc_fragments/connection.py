# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # Connection options shared by every module that talks to PostgreSQL.
    DOCUMENTATION = r"""
options:
  login_user:
    description:
      - The role to connect as.
      - When unset, the E(PGUSER) environment variable of the module process is used, else V(postgres)
        (the same default as community.postgresql).
    type: str
    aliases: [ login ]
  login_password:
    description:
      - The password of O(login_user).
      - When unset, libpq uses E(PGPASSWORD), E(PGPASSFILE) or C(~/.pgpass), which keeps the secret out of task arguments.
      - Never logged, never returned, never passed on a command line.
    type: str
  login_host:
    description:
      - Host name or IP address of the server.
      - When unset (and O(login_unix_socket) too), libpq uses E(PGHOST), else its default Unix socket.
    type: str
    aliases: [ host ]
  login_unix_socket:
    description:
      - Directory of the server's Unix socket. Takes precedence over O(login_host).
    type: str
    aliases: [ unix_socket ]
  port:
    description:
      - Server port. When unset, libpq uses E(PGPORT), else V(5432).
    type: int
    aliases: [ login_port ]
  db:
    description:
      - Database to connect to. When unset, libpq uses E(PGDATABASE), else a database named like the user.
    type: str
    aliases: [ login_db, database ]
  ssl_mode:
    description:
      - libpq C(sslmode). When unset, libpq uses E(PGSSLMODE), else V(prefer).
      - Use V(verify-full) with O(ca_cert) over untrusted networks.
    type: str
    choices: [ disable, allow, prefer, require, verify-ca, verify-full ]
  ca_cert:
    description:
      - File of certificate authorities used to verify the server certificate (libpq C(sslrootcert)).
    type: path
    aliases: [ ssl_rootcert ]
  connect_params:
    description:
      - Further libpq connection keywords, for example C(sslcert), C(sslkey), C(target_session_attrs), C(options).
      - Keys that duplicate an option above (C(password), C(user), C(host), C(port), C(dbname), C(sslmode), ...)
        are refused, and so are C(passfile) and C(sslpassword), because these parameters are not treated as secret;
        they are logged with the task's arguments and reach client tools' command lines.
    type: dict
    default: {}
  connect_timeout:
    description:
      - Seconds to wait for the connection to be established. V(0) waits forever.
    type: int
    default: 10
requirements:
  - psycopg >= 3.1 on the host that runs the module
notes:
  - Sessions opened by keel.postgres modules set C(application_name) to C(keel.postgres/<module>), so they are easy to
    find in C(pg_stat_activity) and are left out of the module's own reports.
"""
