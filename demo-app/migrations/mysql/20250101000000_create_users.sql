-- The blog post's table, for MySQL and MariaDB.
--
-- utf8mb4 stores any Unicode text (the server's default may be latin1), and
-- the binary collation makes the UNIQUE email check exact, as it is on
-- PostgreSQL and SQLite: the default collations would treat `Ada@x.org` and
-- `ada@x.org` as the same email.
CREATE TABLE users (
    id       BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    username VARCHAR(255) NOT NULL,
    email    VARCHAR(255) NOT NULL,
    UNIQUE KEY users_email_key (email)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
