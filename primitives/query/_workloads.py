"""The embedded workloads: their data, their query templates, and loading them into an engine.

Two workloads, both generated offline from PyPI packages:

- ``tpch``: TPC-H data from ``tpchgen-cli`` at a configurable scale factor,
  with parameterised versions of eight multi-join TPC-H queries.
- ``skewed``: a movie-database schema (in the spirit of JOB/IMDb) generated
  with numpy, built to defeat the independence and uniformity assumptions of
  native optimizers: foreign keys follow Zipf laws (a few titles own most
  cast and keyword rows) and filter columns are correlated across tables
  (a title's genre and year follow its country; its companies mostly share
  its country; its keywords follow its genre). Templates join 5 to 11 tables.

A template is a format string plus a parameter sampler, so queries of one
template share their shape and differ in their constants.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Template:
    name: str
    workload: str
    sql: str
    params: Callable[[np.random.Generator], dict]

    def draw(self, rng: np.random.Generator) -> str:
        return " ".join(self.sql.format(**self.params(rng)).split())


# --- skewed: data -------------------------------------------------------------

N_COUNTRIES, N_GENRES, N_KINDS, N_TOPICS, N_INFO_TYPES = 25, 20, 7, 40, 12


def _zipf_choice(rng, n: int, size: int, exponent: float, offset: float = 1.0) -> np.ndarray:
    """Indices 0..n-1 drawn with P(rank r) ~ 1/(r + offset)^exponent, ranks shuffled over ids."""
    weights = 1.0 / (np.arange(n) + offset) ** exponent
    ranks = rng.choice(n, size=size, p=weights / weights.sum())
    return rng.permutation(n)[ranks]


def _home_genre(country: np.ndarray) -> np.ndarray:
    return (country * 7) % N_GENRES + 1


def skewed_tables(scale: float, seed: int) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    n_title, n_company, n_person = int(60_000 * scale), int(6_000 * scale), int(40_000 * scale)
    n_keyword = int(4_000 * scale)

    country = pd.DataFrame({"id": np.arange(1, N_COUNTRIES + 1), "region_id": np.arange(1, N_COUNTRIES + 1) % 5 + 1})
    country["name"] = [f"country_{i:02d}" for i in country["id"]]
    genre = pd.DataFrame({"id": np.arange(1, N_GENRES + 1), "name": [f"genre_{i:02d}" for i in range(1, N_GENRES + 1)]})
    kind_type = pd.DataFrame({"id": np.arange(1, N_KINDS + 1), "kind": ["movie", "tv series", "episode", "video", "short", "documentary", "game"]})
    info_type = pd.DataFrame({"id": np.arange(1, N_INFO_TYPES + 1), "info": [f"info_{i:02d}" for i in range(1, N_INFO_TYPES + 1)]})

    # Titles: country is Zipf-skewed; genre follows country; year and rating follow genre.
    t_country = _zipf_choice(rng, N_COUNTRIES, n_title, 1.3) + 1
    t_genre = np.where(rng.random(n_title) < 0.75, _home_genre(t_country), rng.integers(1, N_GENRES + 1, n_title))
    t_year = np.clip(1950 + (t_genre * 13) % 50 + rng.normal(0, 5, n_title).round(), 1930, 2025).astype(np.int32)
    t_kind = np.where(rng.random(n_title) < 0.6, 1, rng.integers(2, N_KINDS + 1, n_title))
    t_rating = np.clip((t_genre % 10) + rng.normal(0, 1.5, n_title), 1, 10).round(1)
    title = pd.DataFrame({"id": np.arange(1, n_title + 1), "kind_id": t_kind, "production_year": t_year,
                          "genre_id": t_genre, "country_id": t_country, "rating": t_rating})

    c_country = _zipf_choice(rng, N_COUNTRIES, n_company, 1.3) + 1
    company = pd.DataFrame({"id": np.arange(1, n_company + 1), "country_id": c_country, "kind_id": rng.integers(1, 5, n_company)})

    # Companies of a title mostly share its country (cross-table correlation).
    title_popularity = 1.0 / (np.arange(n_title) + 100.0) ** 1.05
    title_popularity = rng.permutation(title_popularity / title_popularity.sum())
    mc_title = rng.choice(n_title, size=int(4 * n_title), p=title_popularity) + 1
    by_country = [np.flatnonzero(c_country == c) + 1 for c in range(1, N_COUNTRIES + 1)]
    same = rng.random(len(mc_title)) < 0.85
    mc_company = _zipf_choice(rng, n_company, len(mc_title), 0.9, 5.0) + 1
    home = t_country[mc_title - 1]
    for c in range(1, N_COUNTRIES + 1):
        pick = same & (home == c)
        if by_country[c - 1].size and pick.any():
            mc_company[pick] = by_country[c - 1][_zipf_choice(rng, by_country[c - 1].size, int(pick.sum()), 0.9, 2.0)]
    movie_companies = pd.DataFrame({"id": np.arange(1, len(mc_title) + 1), "title_id": mc_title, "company_id": mc_company,
                                    "company_type_id": rng.integers(1, 4, len(mc_title))})

    p_gender = np.where(rng.random(n_person) < 0.45, "f", "m")
    p_country = _zipf_choice(rng, N_COUNTRIES, n_person, 1.3) + 1
    person = pd.DataFrame({"id": np.arange(1, n_person + 1), "gender": p_gender,
                           "birth_year": rng.integers(1900, 2005, n_person).astype(np.int32), "country_id": p_country})

    # Cast: popular titles own most rows (skewed FK); roles follow gender.
    ci_title = rng.choice(n_title, size=int(8 * n_title), p=title_popularity) + 1
    ci_person = _zipf_choice(rng, n_person, len(ci_title), 0.8, 10.0) + 1
    actress = p_gender[ci_person - 1] == "f"
    ci_role = np.where(rng.random(len(ci_title)) < 0.7, np.where(actress, 2, 1), rng.integers(3, 12, len(ci_title)))
    cast_info = pd.DataFrame({"id": np.arange(1, len(ci_title) + 1), "title_id": ci_title, "person_id": ci_person, "role_id": ci_role})

    keyword = pd.DataFrame({"id": np.arange(1, n_keyword + 1), "topic_id": rng.integers(1, N_TOPICS + 1, n_keyword)})
    kw_by_topic = [np.flatnonzero(keyword["topic_id"].to_numpy() == t) + 1 for t in range(1, N_TOPICS + 1)]
    mk_title = rng.choice(n_title, size=int(5 * n_title), p=title_popularity) + 1
    mk_keyword = rng.integers(1, n_keyword + 1, len(mk_title))
    topic_of_genre = (t_genre[mk_title - 1] * 2 - rng.integers(0, 2, len(mk_title)) - 1) % N_TOPICS + 1
    follow = rng.random(len(mk_title)) < 0.8
    for t in range(1, N_TOPICS + 1):
        pick = follow & (topic_of_genre == t)
        if kw_by_topic[t - 1].size and pick.any():
            mk_keyword[pick] = rng.choice(kw_by_topic[t - 1], size=int(pick.sum()))
    movie_keyword = pd.DataFrame({"id": np.arange(1, len(mk_title) + 1), "title_id": mk_title, "keyword_id": mk_keyword})

    mi_title = rng.integers(1, n_title + 1, int(6 * n_title))
    mi_type = rng.integers(1, N_INFO_TYPES + 1, len(mi_title))
    mi_value = np.clip((mi_type * 8 + (t_genre[mi_title - 1] * 3) % 20 + rng.normal(0, 4, len(mi_title))).round(), 0, 120).astype(np.int32)
    movie_info = pd.DataFrame({"id": np.arange(1, len(mi_title) + 1), "title_id": mi_title, "info_type_id": mi_type, "info_value": mi_value})

    return {"country": country, "genre": genre, "kind_type": kind_type, "info_type": info_type, "title": title,
            "company": company, "movie_companies": movie_companies, "person": person, "cast_info": cast_info,
            "keyword": keyword, "movie_keyword": movie_keyword, "movie_info": movie_info}


SKEWED_INDEXES = {
    "movie_companies": ("title_id", "company_id"),
    "cast_info": ("title_id", "person_id"),
    "movie_keyword": ("title_id", "keyword_id"),
    "movie_info": ("title_id",),
    "title": ("country_id", "genre_id"),
    "company": ("country_id",),
    "keyword": ("topic_id",),
}


# --- skewed: templates --------------------------------------------------------

def _popular_country(rng) -> int:
    # Mostly the head of the Zipf law (big, correlated result sets), sometimes the tail.
    return int(rng.integers(1, 4)) if rng.random() < 0.6 else int(rng.integers(4, N_COUNTRIES + 1))


def _country_genre(rng) -> dict:
    c = _popular_country(rng)
    # The home genre of the country: the correlation the native estimators miss.
    g = int(_home_genre(np.array([c]))[0]) if rng.random() < 0.7 else int(rng.integers(1, N_GENRES + 1))
    return {"c": c, "g": g, "topic": (2 * g - 1) % N_TOPICS + 1}


def _years(rng, width=(5, 25)) -> dict:
    y0 = int(rng.integers(1950, 2005))
    return {"y0": y0, "y1": y0 + int(rng.integers(*width))}


SKEWED_TEMPLATES = [
    Template("skewed_companies", "skewed", """
        SELECT MIN(t.production_year) AS first_year, COUNT(*) AS n
        FROM title t JOIN movie_companies mc ON mc.title_id = t.id JOIN company co ON co.id = mc.company_id
        JOIN country cn ON cn.id = co.country_id JOIN genre gn ON gn.id = t.genre_id JOIN kind_type kt ON kt.id = t.kind_id
        WHERE t.country_id = {c} AND co.country_id = {c} AND t.genre_id = {g} AND kt.kind = 'movie'""", _country_genre),
    Template("skewed_cast_keywords", "skewed", """
        SELECT MIN(p.birth_year) AS oldest, COUNT(*) AS n
        FROM title t JOIN cast_info ci ON ci.title_id = t.id JOIN person p ON p.id = ci.person_id
        JOIN movie_keyword mk ON mk.title_id = t.id JOIN keyword k ON k.id = mk.keyword_id
        WHERE t.genre_id = {g} AND k.topic_id = {topic} AND t.country_id = {c} AND ci.role_id = 2 AND p.gender = 'f'""",
             _country_genre),
    Template("skewed_company_cast", "skewed", """
        SELECT MIN(t.rating) AS low, MAX(p.birth_year) AS youngest, COUNT(*) AS n
        FROM title t JOIN movie_companies mc ON mc.title_id = t.id JOIN company co ON co.id = mc.company_id
        JOIN cast_info ci ON ci.title_id = t.id JOIN person p ON p.id = ci.person_id JOIN country cn ON cn.id = p.country_id
        WHERE co.country_id = {c} AND t.country_id = {c} AND t.genre_id = {g} AND cn.region_id = {region}
          AND t.production_year BETWEEN {y0} AND {y1}""",
             lambda rng: {**_country_genre(rng), **_years(rng, (10, 40)), "region": int(rng.integers(1, 6))}),
    Template("skewed_info_keywords", "skewed", """
        SELECT MIN(mi.info_value) AS lo, COUNT(*) AS n
        FROM title t JOIN movie_info mi ON mi.title_id = t.id JOIN info_type it ON it.id = mi.info_type_id
        JOIN movie_keyword mk ON mk.title_id = t.id JOIN keyword k ON k.id = mk.keyword_id JOIN genre gn ON gn.id = t.genre_id
        JOIN movie_companies mc ON mc.title_id = t.id JOIN company co ON co.id = mc.company_id
        WHERE t.genre_id = {g} AND k.topic_id = {topic} AND it.id = {it} AND mi.info_value > {v} AND co.country_id = {c}""",
             lambda rng: {**_country_genre(rng), "it": int(rng.integers(1, N_INFO_TYPES + 1)), "v": int(rng.integers(10, 90))}),
    Template("skewed_everything", "skewed", """
        SELECT MIN(t.production_year) AS y, MIN(p.birth_year) AS b, COUNT(*) AS n
        FROM title t JOIN kind_type kt ON kt.id = t.kind_id JOIN genre gn ON gn.id = t.genre_id
        JOIN country tc ON tc.id = t.country_id JOIN movie_companies mc ON mc.title_id = t.id
        JOIN company co ON co.id = mc.company_id JOIN country cc ON cc.id = co.country_id
        JOIN cast_info ci ON ci.title_id = t.id JOIN person p ON p.id = ci.person_id
        JOIN movie_keyword mk ON mk.title_id = t.id JOIN keyword k ON k.id = mk.keyword_id
        WHERE tc.id = {c} AND cc.id = {c} AND gn.id = {g} AND k.topic_id = {topic} AND ci.role_id = 1
          AND t.production_year BETWEEN {y0} AND {y1} AND kt.kind = 'movie'""",
             lambda rng: {**_country_genre(rng), **_years(rng, (15, 50))}),
    Template("skewed_person_country", "skewed", """
        SELECT COUNT(DISTINCT t.id) AS titles, COUNT(*) AS n
        FROM person p JOIN cast_info ci ON ci.person_id = p.id JOIN title t ON t.id = ci.title_id
        JOIN genre gn ON gn.id = t.genre_id JOIN movie_info mi ON mi.title_id = t.id
        WHERE p.country_id = {c} AND t.country_id = {c} AND t.genre_id = {g} AND mi.info_type_id = {it}
          AND p.birth_year BETWEEN {b0} AND {b1}""",
             lambda rng: {**_country_genre(rng), "it": int(rng.integers(1, N_INFO_TYPES + 1)),
                          **dict(zip(("b0", "b1"), sorted(int(x) for x in rng.integers(1900, 2005, 2))))}),
    Template("skewed_keyword_companies", "skewed", """
        SELECT MIN(co.kind_id) AS k, COUNT(*) AS n
        FROM keyword k JOIN movie_keyword mk ON mk.keyword_id = k.id JOIN title t ON t.id = mk.title_id
        JOIN movie_companies mc ON mc.title_id = t.id JOIN company co ON co.id = mc.company_id
        JOIN kind_type kt ON kt.id = t.kind_id
        WHERE k.topic_id = {topic} AND t.genre_id = {g} AND co.country_id = {c} AND mc.company_type_id = {ct}""",
             lambda rng: {**_country_genre(rng), "ct": int(rng.integers(1, 4))}),
    Template("skewed_year_band", "skewed", """
        SELECT gn.name, COUNT(*) AS n
        FROM title t JOIN genre gn ON gn.id = t.genre_id JOIN movie_info mi ON mi.title_id = t.id
        JOIN info_type it ON it.id = mi.info_type_id JOIN cast_info ci ON ci.title_id = t.id
        JOIN movie_companies mc ON mc.title_id = t.id
        WHERE t.production_year BETWEEN {y0} AND {y1} AND t.genre_id = {g} AND t.country_id = {c}
          AND it.id = {it} AND ci.role_id IN (1, 2)
        GROUP BY gn.name""",
             lambda rng: {**_country_genre(rng), **_years(rng, (3, 15)), "it": int(rng.integers(1, N_INFO_TYPES + 1))}),
    Template("skewed_company_keywords_cast", "skewed", """
        SELECT MIN(k.topic_id) AS topic, COUNT(*) AS n
        FROM company co JOIN movie_companies mc ON mc.company_id = co.id JOIN title t ON t.id = mc.title_id
        JOIN movie_keyword mk ON mk.title_id = t.id JOIN keyword k ON k.id = mk.keyword_id
        JOIN cast_info ci ON ci.title_id = t.id
        WHERE co.country_id = {c} AND t.country_id = {c} AND k.topic_id = {topic} AND ci.role_id = {role}
          AND t.genre_id = {g}""",
             lambda rng: {**_country_genre(rng), "role": int(rng.integers(1, 4))}),
    Template("skewed_people_info", "skewed", """
        SELECT MIN(mi.info_value) AS lo, MAX(p.birth_year) AS young, COUNT(*) AS n
        FROM title t JOIN cast_info ci ON ci.title_id = t.id JOIN person p ON p.id = ci.person_id
        JOIN movie_info mi ON mi.title_id = t.id JOIN info_type it ON it.id = mi.info_type_id
        JOIN kind_type kt ON kt.id = t.kind_id JOIN country cn ON cn.id = t.country_id
        WHERE cn.id = {c} AND t.genre_id = {g} AND p.gender = '{gender}' AND it.id = {it}
          AND mi.info_value BETWEEN {v} AND {v} + 30 AND kt.kind = 'movie'""",
             lambda rng: {**_country_genre(rng), "gender": "fm"[int(rng.integers(2))], "it": int(rng.integers(1, N_INFO_TYPES + 1)),
                          "v": int(rng.integers(0, 90))}),
    Template("skewed_rated_companies", "skewed", """
        SELECT co.kind_id, COUNT(*) AS n, MIN(t.rating) AS low
        FROM title t JOIN movie_companies mc ON mc.title_id = t.id JOIN company co ON co.id = mc.company_id
        JOIN genre gn ON gn.id = t.genre_id JOIN movie_info mi ON mi.title_id = t.id
        WHERE t.rating >= {r} AND t.genre_id = {g} AND co.country_id = {c} AND mi.info_type_id = {it}
          AND t.production_year BETWEEN {y0} AND {y1}
        GROUP BY co.kind_id""",
             lambda rng: {**_country_genre(rng), **_years(rng, (10, 40)), "r": round(float(rng.uniform(1, 8)), 1),
                          "it": int(rng.integers(1, N_INFO_TYPES + 1))}),
    Template("skewed_topic_people", "skewed", """
        SELECT COUNT(DISTINCT p.id) AS people, COUNT(*) AS n
        FROM keyword k JOIN movie_keyword mk ON mk.keyword_id = k.id JOIN title t ON t.id = mk.title_id
        JOIN cast_info ci ON ci.title_id = t.id JOIN person p ON p.id = ci.person_id
        JOIN country pc ON pc.id = p.country_id JOIN genre gn ON gn.id = t.genre_id
        WHERE k.topic_id = {topic} AND gn.id = {g} AND pc.region_id = {region} AND t.country_id = {c}
          AND p.birth_year > {b}""",
             lambda rng: {**_country_genre(rng), "region": int(rng.integers(1, 6)), "b": int(rng.integers(1900, 1990))}),
]

# --- tpch ---------------------------------------------------------------------

TPCH_TABLES = ("region", "nation", "supplier", "customer", "part", "partsupp", "orders", "lineitem")
TPCH_INDEXES = {
    "lineitem": ("l_orderkey", "l_partkey", "l_suppkey"),
    "orders": ("o_custkey",),
    "customer": ("c_nationkey",),
    "supplier": ("s_nationkey",),
    "partsupp": ("ps_partkey", "ps_suppkey"),
    "nation": ("n_regionkey",),
}
_SEGMENTS = ("AUTOMOBILE", "BUILDING", "FURNITURE", "HOUSEHOLD", "MACHINERY")
_REGIONS = ("AFRICA", "AMERICA", "ASIA", "EUROPE", "MIDDLE EAST")
_NATIONS = ("ALGERIA", "ARGENTINA", "BRAZIL", "CANADA", "EGYPT", "ETHIOPIA", "FRANCE", "GERMANY", "INDIA", "INDONESIA",
            "IRAN", "IRAQ", "JAPAN", "JORDAN", "KENYA", "MOROCCO", "MOZAMBIQUE", "PERU", "CHINA", "ROMANIA",
            "SAUDI ARABIA", "VIETNAM", "RUSSIA", "UNITED KINGDOM", "UNITED STATES")


def _date(rng, start_year=1993, end_year=1997) -> str:
    return f"{int(rng.integers(start_year, end_year + 1))}-{int(rng.integers(1, 13)):02d}-01"


def _two_nations(rng) -> dict:
    a, b = rng.choice(len(_NATIONS), 2, replace=False)
    return {"n1": _NATIONS[a], "n2": _NATIONS[b]}


TPCH_TEMPLATES = [
    Template("tpch_q3", "tpch", """
        SELECT l_orderkey, SUM(l_extendedprice * (1 - l_discount)) AS revenue, o_orderdate, o_shippriority
        FROM customer, orders, lineitem
        WHERE c_mktsegment = '{segment}' AND c_custkey = o_custkey AND l_orderkey = o_orderkey
          AND o_orderdate < DATE '{d}' AND l_shipdate > DATE '{d}'
        GROUP BY l_orderkey, o_orderdate, o_shippriority ORDER BY revenue DESC, o_orderdate LIMIT 10""",
             lambda rng: {"segment": _SEGMENTS[int(rng.integers(5))], "d": f"1995-03-{int(rng.integers(1, 29)):02d}"}),
    Template("tpch_q5", "tpch", """
        SELECT n_name, SUM(l_extendedprice * (1 - l_discount)) AS revenue
        FROM customer, orders, lineitem, supplier, nation, region
        WHERE c_custkey = o_custkey AND l_orderkey = o_orderkey AND l_suppkey = s_suppkey AND c_nationkey = s_nationkey
          AND s_nationkey = n_nationkey AND n_regionkey = r_regionkey AND r_name = '{region}'
          AND o_orderdate >= DATE '{d}' AND o_orderdate < DATE '{d}' + INTERVAL '1 year'
        GROUP BY n_name ORDER BY revenue DESC""",
             lambda rng: {"region": _REGIONS[int(rng.integers(5))], "d": f"{int(rng.integers(1993, 1998))}-01-01"}),
    Template("tpch_q7", "tpch", """
        SELECT n1.n_name AS supp_nation, n2.n_name AS cust_nation, EXTRACT(year FROM l_shipdate) AS l_year,
               SUM(l_extendedprice * (1 - l_discount)) AS revenue
        FROM supplier, lineitem, orders, customer, nation n1, nation n2
        WHERE s_suppkey = l_suppkey AND o_orderkey = l_orderkey AND c_custkey = o_custkey
          AND s_nationkey = n1.n_nationkey AND c_nationkey = n2.n_nationkey
          AND ((n1.n_name = '{n1}' AND n2.n_name = '{n2}') OR (n1.n_name = '{n2}' AND n2.n_name = '{n1}'))
          AND l_shipdate BETWEEN DATE '1995-01-01' AND DATE '1996-12-31'
        GROUP BY 1, 2, 3 ORDER BY 1, 2, 3""", _two_nations),
    Template("tpch_q8", "tpch", """
        SELECT EXTRACT(year FROM o_orderdate) AS o_year,
               SUM(CASE WHEN n2.n_name = '{nation}' THEN l_extendedprice * (1 - l_discount) ELSE 0 END)
                 / SUM(l_extendedprice * (1 - l_discount)) AS mkt_share
        FROM part, supplier, lineitem, orders, customer, nation n1, nation n2, region
        WHERE p_partkey = l_partkey AND s_suppkey = l_suppkey AND l_orderkey = o_orderkey AND o_custkey = c_custkey
          AND c_nationkey = n1.n_nationkey AND n1.n_regionkey = r_regionkey AND r_name = '{region}'
          AND s_nationkey = n2.n_nationkey AND o_orderdate BETWEEN DATE '1995-01-01' AND DATE '1996-12-31'
          AND p_type = '{ptype}'
        GROUP BY 1 ORDER BY 1""",
             lambda rng: {"nation": _NATIONS[int(rng.integers(25))], "region": _REGIONS[int(rng.integers(5))],
                          "ptype": " ".join((("STANDARD", "SMALL", "MEDIUM", "LARGE", "ECONOMY", "PROMO")[int(rng.integers(6))],
                                             ("ANODIZED", "BURNISHED", "PLATED", "POLISHED", "BRUSHED")[int(rng.integers(5))],
                                             ("TIN", "NICKEL", "BRASS", "STEEL", "COPPER")[int(rng.integers(5))]))}),
    Template("tpch_q9", "tpch", """
        SELECT n_name AS nation, EXTRACT(year FROM o_orderdate) AS o_year,
               SUM(l_extendedprice * (1 - l_discount) - ps_supplycost * l_quantity) AS amount
        FROM part, supplier, lineitem, partsupp, orders, nation
        WHERE s_suppkey = l_suppkey AND ps_suppkey = l_suppkey AND ps_partkey = l_partkey AND p_partkey = l_partkey
          AND o_orderkey = l_orderkey AND s_nationkey = n_nationkey AND p_name LIKE '%{color}%'
        GROUP BY 1, 2 ORDER BY 1, 2 DESC""",
             lambda rng: {"color": ("green", "red", "blue", "ivory", "khaki", "navy", "plum", "snow")[int(rng.integers(8))]}),
    Template("tpch_q10", "tpch", """
        SELECT c_custkey, c_name, SUM(l_extendedprice * (1 - l_discount)) AS revenue, n_name
        FROM customer, orders, lineitem, nation
        WHERE c_custkey = o_custkey AND l_orderkey = o_orderkey AND o_orderdate >= DATE '{d}'
          AND o_orderdate < DATE '{d}' + INTERVAL '3 month' AND l_returnflag = 'R' AND c_nationkey = n_nationkey
        GROUP BY c_custkey, c_name, n_name ORDER BY revenue DESC LIMIT 20""",
             lambda rng: {"d": _date(rng, 1993, 1994)}),
    Template("tpch_q12", "tpch", """
        SELECT l_shipmode, SUM(CASE WHEN o_orderpriority IN ('1-URGENT', '2-HIGH') THEN 1 ELSE 0 END) AS high_line_count,
               SUM(CASE WHEN o_orderpriority NOT IN ('1-URGENT', '2-HIGH') THEN 1 ELSE 0 END) AS low_line_count
        FROM orders, lineitem
        WHERE o_orderkey = l_orderkey AND l_shipmode IN ('{m1}', '{m2}') AND l_commitdate < l_receiptdate
          AND l_shipdate < l_commitdate AND l_receiptdate >= DATE '{d}' AND l_receiptdate < DATE '{d}' + INTERVAL '1 year'
        GROUP BY l_shipmode ORDER BY l_shipmode""",
             lambda rng: dict(zip(("m1", "m2"), rng.choice(["MAIL", "SHIP", "AIR", "TRUCK", "RAIL", "FOB", "REG AIR"], 2, replace=False)),
                              d=f"{int(rng.integers(1993, 1998))}-01-01")),
    Template("tpch_q14", "tpch", """
        SELECT 100.00 * SUM(CASE WHEN p_type LIKE 'PROMO%' THEN l_extendedprice * (1 - l_discount) ELSE 0 END)
               / SUM(l_extendedprice * (1 - l_discount)) AS promo_revenue
        FROM lineitem, part
        WHERE l_partkey = p_partkey AND l_shipdate >= DATE '{d}' AND l_shipdate < DATE '{d}' + INTERVAL '1 month'""",
             lambda rng: {"d": _date(rng)}),
]

TEMPLATES = {t.name: t for t in SKEWED_TEMPLATES + TPCH_TEMPLATES}
WORKLOADS = ("skewed", "tpch")


def tpch_tables(scale_factor: float) -> dict:
    """TPC-H tables (pyarrow) generated by tpchgen-cli."""
    import pyarrow.parquet as pq

    # The CLI sits beside the interpreter in a venv that is not activated.
    cli = shutil.which("tpchgen-cli") or str(Path(sys.executable).with_name("tpchgen-cli"))
    if not Path(cli).exists():
        raise RuntimeError("tpchgen-cli not found: pip install tpchgen-cli")
    with tempfile.TemporaryDirectory(prefix="aiprim-tpch-") as tmp:
        done = subprocess.run([cli, "parquet", "-s", str(scale_factor), "--output-dir", tmp], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"tpchgen-cli failed: {done.stderr.strip()[-400:]}")
        return {name: pq.read_table(Path(tmp) / f"{name}.parquet") for name in TPCH_TABLES}


def workload_tables(workloads, skewed_scale: float, tpch_scale: float, seed: int) -> tuple[dict, dict]:
    """(tables, indexes) of the chosen workloads."""
    tables, indexes = {}, {}
    if "skewed" in workloads:
        tables.update(skewed_tables(skewed_scale, seed))
        indexes.update(SKEWED_INDEXES)
    if "tpch" in workloads:
        tables.update(tpch_tables(tpch_scale))
        indexes.update(TPCH_INDEXES)
    unknown = set(workloads) - set(WORKLOADS)
    if unknown:
        raise ValueError(f"unknown workload(s) {sorted(unknown)} (known: {', '.join(WORKLOADS)})")
    return tables, indexes


def build_duckdb(path: Path, tables: dict) -> Path:
    """Write tables into a new DuckDB file (atomically: a half-built file never appears at ``path``)."""
    import duckdb

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(".building")
    staging.unlink(missing_ok=True)
    con = duckdb.connect(str(staging))
    try:
        for name, frame in tables.items():
            con.register("incoming", frame)
            con.execute(f"CREATE TABLE {name} AS SELECT * FROM incoming")
            con.unregister("incoming")
        con.execute("CHECKPOINT")
    finally:
        con.close()
    staging.rename(path)
    return path


def load_postgres(dsn: str, tables: dict, indexes: dict) -> None:
    """Create and fill the tables on a PostgreSQL server, index the join keys and ANALYZE."""
    import psycopg
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    pg_types = {"int8": "bigint", "int16": "smallint", "int32": "integer", "int64": "bigint", "double": "double precision",
                "float": "real", "string": "text", "large_string": "text", "date32[day]": "date", "bool": "boolean"}
    with psycopg.connect(dsn, autocommit=True) as con:
        for name, frame in tables.items():
            table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
            # tpchgen writes string_view, which neither the CSV writer nor the type map knows.
            table = table.cast(pa.schema([pa.field(f.name, pa.string() if pa.types.is_string_view(f.type) else f.type)
                                          for f in table.schema]))
            columns = []
            for field in table.schema:
                kind = str(field.type)
                sql_type = pg_types.get(kind) or ("numeric" if kind.startswith("decimal") else "text")
                columns.append(f"{field.name} {sql_type}")
            con.execute(f"DROP TABLE IF EXISTS {name}")
            con.execute(f"CREATE TABLE {name} ({', '.join(columns)})")
            buffer = io.BytesIO()
            pa_csv.write_csv(table, buffer, pa_csv.WriteOptions(include_header=False))
            with con.cursor().copy(f"COPY {name} FROM STDIN WITH (FORMAT csv)") as copy:
                copy.write(buffer.getvalue())
            first = table.schema.names[0]
            if first in ("id",) or first.endswith("key") and name not in ("lineitem", "partsupp"):
                con.execute(f"ALTER TABLE {name} ADD PRIMARY KEY ({first})")
            for column in indexes.get(name, ()):
                con.execute(f"CREATE INDEX ON {name} ({column})")
            con.execute(f"ANALYZE {name}")
