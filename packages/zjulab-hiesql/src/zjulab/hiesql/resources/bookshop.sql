-- A small bookshop database written for the zjulab-hiesql demo and tests.
CREATE TABLE author (
    author_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    country TEXT,
    birth_year INTEGER
);
CREATE TABLE book (
    book_id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    author_id INTEGER REFERENCES author(author_id),
    year INTEGER,
    price REAL,
    genre TEXT
);
CREATE TABLE sale (
    sale_id INTEGER PRIMARY KEY,
    book_id INTEGER REFERENCES book(book_id),
    quantity INTEGER,
    sale_date TEXT
);
INSERT INTO author VALUES
    (1, 'Ada Lindqvist', 'Sweden', 1961),
    (2, 'Bruno Alves', 'Brazil', 1975),
    (3, 'Chloe Martin', 'Canada', 1983),
    (4, 'Dev Raman', 'India', 1970),
    (5, 'Elena Petrova', 'Canada', 1958);
INSERT INTO book VALUES
    (1, 'Northern Lights Over Kiruna', 1, 1998, 12.5, 'novel'),
    (2, 'The Last Ferry', 1, 2004, 15.0, 'novel'),
    (3, 'Rivers of Salt', 2, 2011, 18.0, 'history'),
    (4, 'Maple and Stone', 3, 2015, 22.0, 'poetry'),
    (5, 'Quiet Machines', 3, 2019, 25.5, 'science'),
    (6, 'Monsoon Ledger', 4, 2008, 14.0, 'novel'),
    (7, 'Winter Atlas', 5, 1995, 30.0, 'history'),
    (8, 'Small Hours', 5, 2001, 11.0, 'poetry');
INSERT INTO sale VALUES
    (1, 1, 3, '2024-01-05'), (2, 2, 1, '2024-01-07'), (3, 4, 5, '2024-02-11'),
    (4, 5, 2, '2024-02-14'), (5, 5, 4, '2024-03-01'), (6, 7, 1, '2024-03-09'),
    (7, 8, 6, '2024-03-15'), (8, 3, 2, '2024-04-02'), (9, 6, 3, '2024-04-20');
