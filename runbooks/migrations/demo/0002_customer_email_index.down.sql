DROP INDEX IF EXISTS customers_email;
