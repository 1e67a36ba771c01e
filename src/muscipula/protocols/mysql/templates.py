"""The databases a fresh install ships: a small WordPress site and a web shop.

Made once, at first start, into SQLite files in the state directory. Column
types are written in MySQL's words (SQLite keeps declared types as given), so
DESCRIBE and information_schema show what a MySQL admin expects. Hashes, names
and dates are drawn at creation, so no two installs hold the same rows.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Callable
from pathlib import Path

_ITOA64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_FIRST = ("james", "mary", "robert", "linda", "michael", "susan", "david", "karen", "thomas",
          "laura", "daniel", "emma", "paul", "anna", "mark", "julia", "peter", "sarah")
_LAST = ("smith", "miller", "brown", "wilson", "taylor", "clark", "walker", "young", "king",
         "wright", "baker", "hill", "green", "adams", "nelson", "carter", "evans", "turner")
_SITES = ("northwind", "bluepeak", "greenleaf", "redriver", "sunhill", "oakline", "brightpath",
          "silverlake", "stonebridge", "fairway")


def _phpass() -> str:
    return "$P$B" + "".join(secrets.choice(_ITOA64) for _ in range(30))


def _bcrypt() -> str:
    return "$2y$10$" + "".join(secrets.choice(_ITOA64) for _ in range(53))


def _date(year: int = 2023) -> str:
    return (f"{year + secrets.randbelow(2)}-{1 + secrets.randbelow(12):02d}-"
            f"{1 + secrets.randbelow(28):02d} {secrets.randbelow(24):02d}:"
            f"{secrets.randbelow(60):02d}:{secrets.randbelow(60):02d}")


def _people(n: int) -> list[tuple[str, str]]:
    seen: set[tuple[str, str]] = set()
    while len(seen) < n:
        seen.add((secrets.choice(_FIRST), secrets.choice(_LAST)))
    return sorted(seen)


def wordpress(db: sqlite3.Connection) -> None:
    site = secrets.choice(_SITES)
    domain = f"{site}.com"
    db.executescript("""
    CREATE TABLE wp_users (
      ID INTEGER PRIMARY KEY AUTOINCREMENT,
      user_login varchar(60) NOT NULL DEFAULT '',
      user_pass varchar(255) NOT NULL DEFAULT '',
      user_nicename varchar(50) NOT NULL DEFAULT '',
      user_email varchar(100) NOT NULL DEFAULT '',
      user_url varchar(100) NOT NULL DEFAULT '',
      user_registered datetime NOT NULL DEFAULT '0000-00-00 00:00:00',
      user_activation_key varchar(255) NOT NULL DEFAULT '',
      user_status int NOT NULL DEFAULT 0,
      display_name varchar(250) NOT NULL DEFAULT '');
    CREATE TABLE wp_options (
      option_id INTEGER PRIMARY KEY AUTOINCREMENT,
      option_name varchar(191) NOT NULL DEFAULT '' UNIQUE,
      option_value longtext NOT NULL,
      autoload varchar(20) NOT NULL DEFAULT 'yes');
    CREATE TABLE wp_posts (
      ID INTEGER PRIMARY KEY AUTOINCREMENT,
      post_author bigint unsigned NOT NULL DEFAULT 0,
      post_date datetime NOT NULL DEFAULT '0000-00-00 00:00:00',
      post_content longtext NOT NULL,
      post_title text NOT NULL,
      post_status varchar(20) NOT NULL DEFAULT 'publish',
      post_name varchar(200) NOT NULL DEFAULT '',
      post_type varchar(20) NOT NULL DEFAULT 'post',
      comment_count bigint NOT NULL DEFAULT 0);
    CREATE TABLE wp_usermeta (
      umeta_id INTEGER PRIMARY KEY AUTOINCREMENT,
      user_id bigint unsigned NOT NULL DEFAULT 0,
      meta_key varchar(255) DEFAULT NULL,
      meta_value longtext);
    CREATE TABLE wp_comments (
      comment_ID INTEGER PRIMARY KEY AUTOINCREMENT,
      comment_post_ID bigint unsigned NOT NULL DEFAULT 0,
      comment_author tinytext NOT NULL,
      comment_author_email varchar(100) NOT NULL DEFAULT '',
      comment_date datetime NOT NULL DEFAULT '0000-00-00 00:00:00',
      comment_content text NOT NULL,
      comment_approved varchar(20) NOT NULL DEFAULT '1');
    """)
    people = _people(3)
    users = [("admin", "Administrator")] + [(f"{f[0]}{last}", f"{f.title()} {last.title()}")
                                             for f, last in people]
    for login, name in users:
        db.execute("INSERT INTO wp_users (user_login, user_pass, user_nicename, user_email, "
                   "user_registered, display_name) VALUES (?,?,?,?,?,?)",
                   (login, _phpass(), login, f"{login}@{domain}", _date(2022), name))
    for uid, _ in enumerate(users, 1):
        level = "10" if uid == 1 else "2"
        role = 'a:1:{s:13:"administrator";b:1;}' if uid == 1 else 'a:1:{s:6:"author";b:1;}'
        db.execute("INSERT INTO wp_usermeta (user_id, meta_key, meta_value) VALUES (?,?,?)",
                   (uid, "wp_capabilities", role))
        db.execute("INSERT INTO wp_usermeta (user_id, meta_key, meta_value) VALUES (?,?,?)",
                   (uid, "wp_user_level", level))
    options = [("siteurl", f"https://www.{domain}"), ("home", f"https://www.{domain}"),
               ("blogname", site.title()), ("blogdescription", "Just another WordPress site"),
               ("admin_email", f"admin@{domain}"), ("users_can_register", "0"),
               ("template", "twentytwentythree"), ("stylesheet", "twentytwentythree"),
               ("db_version", "53496"), ("active_plugins",
                                         'a:2:{i:0;s:19:"akismet/akismet.php";'
                                         'i:1;s:36:"contact-form-7/wp-contact-form-7.php";}')]
    db.executemany("INSERT INTO wp_options (option_name, option_value) VALUES (?,?)", options)
    posts = [("Hello world!", "hello-world", "post"), ("About us", "about-us", "page"),
             ("Contact", "contact", "page"), ("Our new season starts", "new-season", "post")]
    for title, slug, kind in posts:
        db.execute("INSERT INTO wp_posts (post_author, post_date, post_content, post_title, "
                   "post_name, post_type) VALUES (1,?,?,?,?,?)",
                   (_date(), f"<!-- wp:paragraph --><p>{title}</p><!-- /wp:paragraph -->",
                    title, slug, kind))
    db.execute("INSERT INTO wp_comments (comment_post_ID, comment_author, comment_author_email, "
               "comment_date, comment_content) VALUES (1, 'A WordPress Commenter', "
               "'wapuu@wordpress.example', ?, 'Hi, this is a comment.')", (_date(),))


def shop(db: sqlite3.Connection) -> None:
    domain = f"{secrets.choice(_SITES)}-store.com"
    db.executescript("""
    CREATE TABLE customers (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      email varchar(255) NOT NULL UNIQUE,
      password varchar(255) NOT NULL,
      first_name varchar(100) NOT NULL DEFAULT '',
      last_name varchar(100) NOT NULL DEFAULT '',
      phone varchar(32) DEFAULT NULL,
      created_at datetime NOT NULL);
    CREATE TABLE products (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      sku varchar(32) NOT NULL UNIQUE,
      name varchar(255) NOT NULL,
      price decimal(10,2) NOT NULL DEFAULT 0.00,
      stock int NOT NULL DEFAULT 0);
    CREATE TABLE orders (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      customer_id int NOT NULL,
      status varchar(20) NOT NULL DEFAULT 'pending',
      total decimal(10,2) NOT NULL DEFAULT 0.00,
      created_at datetime NOT NULL);
    CREATE TABLE order_items (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      order_id int NOT NULL,
      product_id int NOT NULL,
      quantity int NOT NULL DEFAULT 1,
      price decimal(10,2) NOT NULL DEFAULT 0.00);
    CREATE TABLE admin_users (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      username varchar(64) NOT NULL UNIQUE,
      password varchar(255) NOT NULL,
      last_login datetime DEFAULT NULL);
    """)
    for first, last in _people(6):
        db.execute("INSERT INTO customers (email, password, first_name, last_name, phone, "
                   "created_at) VALUES (?,?,?,?,?,?)",
                   (f"{first}.{last}@{domain}", _bcrypt(), first.title(), last.title(),
                    f"+1 555 {secrets.randbelow(9000) + 1000}", _date()))
    goods = [("Espresso cup set", 24.90), ("Ceramic teapot", 39.50), ("Coffee grinder", 89.00),
             ("Tea sampler box", 19.95), ("Milk frother", 29.99)]
    for n, (name, price) in enumerate(goods, 1):
        db.execute("INSERT INTO products (sku, name, price, stock) VALUES (?,?,?,?)",
                   (f"SKU-{1000 + n * 7}", name, price, secrets.randbelow(200)))
    for n in range(1, 5):
        qty = 1 + secrets.randbelow(3)
        price = goods[n % len(goods)][1]
        db.execute("INSERT INTO orders (customer_id, status, total, created_at) VALUES (?,?,?,?)",
                   (n, secrets.choice(("paid", "shipped", "pending")), round(qty * price, 2),
                    _date()))
        db.execute("INSERT INTO order_items (order_id, product_id, quantity, price) "
                   "VALUES (?,?,?,?)", (n, n % len(goods) + 1, qty, price))
    db.execute("INSERT INTO admin_users (username, password, last_login) VALUES (?,?,?)",
               ("admin", _bcrypt(), _date()))


def empty(db: sqlite3.Connection) -> None:
    """A database with no tables (MySQL 5.5's `test`)."""


TEMPLATES: dict[str, Callable[[sqlite3.Connection], None]] = {
    "wordpress": wordpress, "shop": shop, "empty": empty,
}


def ensure(path: Path, template: str) -> None:
    """Create `path` from `template` unless it exists (written whole, then renamed)."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    db = sqlite3.connect(tmp)
    try:
        TEMPLATES[template](db)
        db.commit()
    finally:
        db.close()
    tmp.replace(path)
