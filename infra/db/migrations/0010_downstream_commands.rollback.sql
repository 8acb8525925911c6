DROP TABLE downstream_commands;
