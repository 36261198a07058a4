CREATE TABLE c (x int);
