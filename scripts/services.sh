# Sourced by scripts/test and scripts/demo: makes sure the services the
# project talks to are installed and running. Safe to run again and again.

apt_updated=0
apt_install() {
    if [ "$apt_updated" = 0 ]; then
        apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

wait_for() { # description, command...
    local what=$1
    shift
    for _ in $(seq 1 60); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    echo "error: $what did not come up" >&2
    return 1
}

ensure_redis() {
    if ! command -v redis-server >/dev/null; then
        echo "installing redis-server"
        apt_install redis-server
    fi
    # The tests start their own servers; the demo uses the one on 6379.
    if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
        echo "starting redis-server on 127.0.0.1:6379"
        mkdir -p /var/lib/redis /var/log/redis
        redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
            --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
        wait_for "redis-server" redis-cli -h 127.0.0.1 -p 6379 ping
    fi
}

ensure_postgres() {
    if ! command -v pg_ctlcluster >/dev/null; then
        echo "installing postgresql"
        apt_install postgresql
    fi
    if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
        echo "starting postgresql"
        local version
        version=$(ls /etc/postgresql | sort -V | tail -n 1)
        pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
        wait_for "postgresql" pg_isready -h 127.0.0.1 -p 5432 -q
    fi
}

ensure_mariadb() {
    if ! command -v mariadbd >/dev/null && [ ! -x /usr/sbin/mariadbd ]; then
        echo "installing mariadb-server"
        apt_install mariadb-server
    fi
    if ! mariadb-admin -h 127.0.0.1 -u root ping >/dev/null 2>&1; then
        echo "starting mariadb"
        start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
        wait_for "mariadb" mariadb-admin -h 127.0.0.1 -u root ping
    fi
}

# The demo's browser test drives headless Chromium through chromedriver.
ensure_chromium() {
    if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
        echo "installing chromium and chromium-driver"
        apt_install chromium chromium-driver
    fi
}
