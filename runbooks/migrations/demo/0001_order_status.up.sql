-- Orders get a status; existing orders are backfilled from their shipping date.
ALTER TABLE orders ADD COLUMN status TEXT;
UPDATE orders SET status = CASE WHEN shipped_at IS NULL THEN 'open' ELSE 'shipped' END;
CREATE INDEX orders_status ON orders (status);
