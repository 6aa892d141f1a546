DROP TABLE kubectl_sessions;
