"""Collecting the week's links into an issue: fetch (safely), read the page, edit the file.

fetch.py   pages and feeds over HTTP, off private networks, bounded in time and size
feeds.py   the entries of an RSS or Atom feed since a date
edit.py    appending articles to an issue file, keeping the editor's comments
add.py     `newsletter add`: the three together
"""
