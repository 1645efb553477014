"""Write a generated rating log in RecBole's atomic format, shaped like MovieLens-1M.

MovieLens files may not be redistributed, and ML-1M is not shipped with
``recbole``; this writes a folder of the same shape for the benchmarks
(``bench_e2e.py --data DIR``):

* ``DIR/<name>.inter``: ``user_id:token item_id:token rating:float
  timestamp:float``, one rating per (user, item) pair, as in MovieLens;
* ``DIR/<name>.item``: ``item_id:token genre:token_seq`` (one to three genres;
  the loaders take the first as the item's category).

The defaults are ML-1M's figures: 6,040 users, 3,706 items, 18 genres,
1,000,209 ratings, at least 20 ratings per user with a long tail (ML-1M: median
96, mean 165.6, max 2,314), item popularity long-tailed, and the ratings 1-5 in
ML-1M's proportions (5.6 / 10.8 / 26.1 / 34.9 / 22.6 %).

What a model can learn: every user holds two current favourite genres that
drift (with probability ``--drift`` per rating one is replaced, and becomes
a former favourite); most of what a user rates comes from the current
favourites, some from former ones, the rest from anywhere by popularity. A
rating is the quantile bucket of

    user bias + item quality + 1.0 [genre is a current favourite]
                             + 0.4 [genre is a former favourite only] + noise

so the recent history (which genres the user has been rating highly lately)
predicts the next rating, and the whole history less well. Seeded: the same
arguments write the same files::

    python benchmarks/make_recbole_log.py --out /tmp/ml-1m-shaped
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

# ML-1M's rating proportions for 1..5 stars.
RATING_SHARES = np.array([0.0562, 0.1075, 0.2612, 0.3489, 0.2263])
# The first ratings of ML-1M fall in April 2000; its last in February 2003.
FIRST_TIME, LAST_TIME = 956_703_932, 1_046_454_590


def ratings_per_user(rng, users: int, total: int, least: int, most: int) -> np.ndarray:
    """Long-tailed counts (log-normal above ``least``), capped at ``most``, summing to ``total``."""
    extra = rng.lognormal(mean=np.log(76.0), sigma=1.14, size=users)
    for _ in range(20):  # scale to the total; capping takes some back, so repeat
        extra = np.minimum(extra * (total - least * users) / extra.sum(), most - least)
    counts = least + np.floor(extra).astype(np.int64)
    # Rounding leaves a few ratings over: hand them to random users below the cap.
    short = total - counts.sum()
    while short > 0:
        room = np.flatnonzero(counts < most)
        chosen = rng.choice(room, size=min(short, len(room)), replace=False)
        counts[chosen] += 1
        short = total - counts.sum()
    return counts


def item_catalogue(rng, items: int, genres: int):
    """Each item's genres (first = its main genre), popularity weight and quality."""
    genre_share = 1.0 / np.arange(1, genres + 1) ** 0.8
    main = rng.choice(genres, size=items, p=genre_share / genre_share.sum())
    extra = rng.integers(0, 3, size=items)  # 0-2 further genres
    item_genres = [
        [int(g)] + [int(x) for x in rng.choice(genres, size=k, replace=False) if x != g]
        for g, k in zip(main, extra, strict=True)
    ]
    popularity = 1.0 / (rng.permutation(items) + 10.0) ** 1.1
    quality = rng.normal(0.0, 0.6, size=items)
    return main, item_genres, popularity, quality


class _GenrePicker:
    """Draws items of given genres by popularity, one inverse-CDF lookup per genre."""

    def __init__(self, main: np.ndarray, popularity: np.ndarray, genres: int):
        self.members = [np.flatnonzero(main == g) for g in range(genres)]
        self.cdfs = [np.cumsum(popularity[m]) / popularity[m].sum() for m in self.members]

    def draw(self, rng, genre: np.ndarray) -> np.ndarray:
        out = np.empty(len(genre), dtype=np.int64)
        for g in np.unique(genre):
            rows = np.flatnonzero(genre == g)
            picks = np.searchsorted(self.cdfs[g], rng.random(len(rows)), side="right")
            out[rows] = self.members[g][np.minimum(picks, len(self.members[g]) - 1)]
        return out


def generate(args) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(args.seed)
    users, items, genres = args.users, args.items, args.genres
    counts = ratings_per_user(rng, users, args.ratings, args.least, args.most)
    main, item_genres, popularity, quality = item_catalogue(rng, items, genres)
    picker = _GenrePicker(main, popularity, genres)
    genre_popularity = np.bincount(main, weights=popularity, minlength=genres)
    genre_popularity /= genre_popularity.sum()
    user_bias = rng.normal(0.0, 0.6, size=users)
    favourite = np.stack([rng.choice(genres, 2, replace=False) for _ in range(users)])
    former = np.zeros((users, genres), dtype=bool)
    seen = np.zeros((users, items), dtype=bool)
    clock = rng.uniform(FIRST_TIME, FIRST_TIME + 0.6 * (LAST_TIME - FIRST_TIME), size=users)
    parts = []
    for step in range(int(counts.max())):
        active = np.flatnonzero(counts > step)
        drifting = active[rng.random(len(active)) < args.drift]
        slot = rng.integers(0, 2, size=len(drifting))
        former[drifting, favourite[drifting, slot]] = True
        favourite[drifting, slot] = rng.integers(0, genres, size=len(drifting))
        # The genre of what the user rates next: a current favourite, a former one, or any.
        draw = rng.random(len(active))
        genre = rng.choice(genres, size=len(active), p=genre_popularity)
        current = draw < args.p_current
        genre[current] = favourite[active[current], rng.integers(0, 2, current.sum())]
        is_current = np.zeros((len(active), genres), dtype=bool)
        np.put_along_axis(is_current, favourite[active], True, axis=1)
        is_former = former[active] & ~is_current
        from_former = (draw >= args.p_current) & (draw < args.p_current + args.p_former)
        for row in np.flatnonzero(from_former & is_former.any(axis=1)):
            genre[row] = rng.choice(np.flatnonzero(is_former[row]))
        item = _unseen(rng, picker, seen, active, genre)
        seen[active, item] = True
        is_favourite = (favourite[active] == main[item][:, None]).any(axis=1)
        score = (
            user_bias[active]
            + quality[item]
            + 1.0 * is_favourite
            + 0.4 * (is_former[np.arange(len(active)), main[item]] & ~is_favourite)
            + rng.normal(0.0, 1.0, size=len(active))
        )
        clock[active] += rng.exponential(3600.0 * 24 * 3, size=len(active)) + 1.0
        parts.append((active, item, score, clock[active].copy()))
    user, item, score, time = (np.concatenate([p[k] for p in parts]) for k in range(4))
    cuts = np.quantile(score, np.cumsum(RATING_SHARES)[:-1])
    rating = 1 + np.searchsorted(cuts, score)
    time = np.minimum(time, LAST_TIME).astype(np.int64)
    return {"user": user, "item": item, "rating": rating, "time": time, "genres": item_genres}


def _unseen(rng, picker: _GenrePicker, seen, active, genre) -> np.ndarray:
    """An item of each row's genre the user has not rated (MovieLens has one rating per
    pair): a few popularity draws, then any unrated item of the catalogue."""
    item = picker.draw(rng, genre)
    for _ in range(4):
        again = np.flatnonzero(seen[active, item])
        if len(again) == 0:
            return item
        item[again] = picker.draw(rng, genre[again])
    for row in np.flatnonzero(seen[active, item]):
        item[row] = rng.choice(np.flatnonzero(~seen[active[row]]))
    return item


def write(out: Path, name: str, log: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    order = np.argsort(log["time"], kind="stable")
    with open(out / f"{name}.inter", "w") as f:
        f.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        rows = np.stack(
            [
                log["user"][order] + 1,
                log["item"][order] + 1,
                log["rating"][order],
                log["time"][order],
            ],
            axis=1,
        )
        np.savetxt(f, rows, fmt="%d", delimiter="\t")
    with open(out / f"{name}.item", "w") as f:
        f.write("item_id:token\tgenre:token_seq\n")
        for i, genres in enumerate(log["genres"]):
            f.write(f"{i + 1}\t{' '.join(f'g{g:02d}' for g in genres)}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the folder to write")
    parser.add_argument("--name", default="ml-1m-shaped", help="the atomic files' stem")
    parser.add_argument("--users", type=int, default=6040, help="users (ML-1M: 6,040)")
    parser.add_argument("--items", type=int, default=3706, help="items (ML-1M: 3,706)")
    parser.add_argument("--genres", type=int, default=18, help="genres (ML-1M: 18)")
    parser.add_argument(
        "--ratings", type=int, default=1_000_209, help="ratings in all (ML-1M: 1,000,209)"
    )
    parser.add_argument("--least", type=int, default=20, help="fewest ratings per user")
    parser.add_argument("--most", type=int, default=2314, help="most ratings per user")
    parser.add_argument(
        "--drift", type=float, default=0.02, help="chance per rating that a favourite genre changes"
    )
    parser.add_argument(
        "--p-current", type=float, default=0.55, help="share of ratings from a current favourite"
    )
    parser.add_argument(
        "--p-former", type=float, default=0.15, help="share of ratings from a former favourite"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.ratings < args.least * args.users or args.most > args.items:
        parser.error("--ratings must allow --least per user and --most must not exceed --items")
    log = generate(args)
    write(Path(args.out), args.name, log)
    per_user = np.bincount(log["user"], minlength=args.users)
    shares = np.bincount(log["rating"], minlength=6)[1:] / len(log["rating"])
    print(
        f"{args.out}: {len(log['user']):,} ratings, {args.users:,} users, {args.items:,} items, "
        f"{args.genres} genres; ratings per user median {np.median(per_user):.0f}, mean "
        f"{per_user.mean():.1f}, max {per_user.max()}; stars 1-5 "
        + " / ".join(f"{s:.1%}" for s in shares)
    )


if __name__ == "__main__":
    main()
